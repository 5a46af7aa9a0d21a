"""Initialise transformers' Mask2Former parts used outside `Mask2FormerModel`.

Those parts get their initial weights from `Mask2FormerPreTrainedModel._init_weights` (the pixel decoder's level
embedding is even allocated uninitialised). We use the parts standalone, so we apply the same routine to them.
"""

from __future__ import annotations

from types import SimpleNamespace

from torch import nn
from transformers import Mask2FormerConfig
from transformers.models.mask2former.modeling_mask2former import (
    Mask2FormerMaskedAttentionDecoderLayer,
    Mask2FormerPixelDecoder,
    Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention,
    Mask2FormerPreTrainedModel,
)

_INITIALISED_BY_TRANSFORMERS = (
    Mask2FormerPixelDecoder,
    Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention,
    Mask2FormerMaskedAttentionDecoderLayer,
)


def init_mask2former_parts(root: nn.Module, config: Mask2FormerConfig) -> None:
    holder = SimpleNamespace(config=config)
    for module in root.modules():
        if isinstance(module, _INITIALISED_BY_TRANSFORMERS):
            Mask2FormerPreTrainedModel._init_weights(holder, module)
