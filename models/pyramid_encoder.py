"""Pyramid encoder F_seg: a backbone (res2..res5) and Mask2Former's deformable pixel decoder.

The backbone is transformers' Swin, as in the paper, or EfficientNet-Lite0 (models/efficientnet_lite.py), the one
network with ImageNet weights on these machines.

The two halves are separate calls because the streaming pipeline may place them on different actors: the backbone
features feed both the perceiver (res3..res5) and the pixel decoder, whose output feeds the predictor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import Mask2FormerConfig, SwinBackbone, SwinConfig
from transformers.models.mask2former.modeling_mask2former import Mask2FormerPixelDecoder

from models.config import PyramidEncoderConfig
from models.efficientnet_lite import EfficientNetLite0Backbone, imagenet_state_dict
from models.mask2former_init import init_mask2former_parts

SCALES = ("res2", "res3", "res4", "res5")


@dataclass
class PixelFeatures:
    """Pixel decoder output: per-pixel mask features at 1/4 and three 1/32, 1/16, 1/8 maps for the decoder."""

    mask_features: torch.Tensor  # (B, mask_feature_size, H/4, W/4)
    multi_scale: tuple[torch.Tensor, ...]  # low to high resolution, each (B, feature_size, h, w)


def pixel_decoder_config(cfg: PyramidEncoderConfig) -> Mask2FormerConfig:
    return Mask2FormerConfig(
        feature_size=cfg.feature_size,
        mask_feature_size=cfg.mask_feature_size,
        encoder_layers=cfg.encoder_layers,
        encoder_feedforward_dim=cfg.encoder_feedforward_dim,
        num_attention_heads=cfg.num_heads_pixel_decoder,
        common_stride=4,
        feature_strides=(4, 8, 16, 32),
    )


def build_backbone(cfg: PyramidEncoderConfig) -> nn.Module:
    if cfg.backbone == "efficientnet_lite0":
        return EfficientNetLite0Backbone()
    return SwinBackbone(
        SwinConfig(
            image_size=cfg.image_size,
            patch_size=cfg.patch_size,
            embed_dim=cfg.embed_dim,
            depths=list(cfg.depths),
            num_heads=list(cfg.num_heads),
            window_size=cfg.window_size,
            out_features=[f"stage{i + 1}" for i in range(len(cfg.depths))],
        )
    )


class PyramidEncoder(nn.Module):
    def __init__(self, cfg: PyramidEncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = build_backbone(cfg)
        decoder_cfg = pixel_decoder_config(cfg)
        decoder = Mask2FormerPixelDecoder(decoder_cfg, feature_channels=list(cfg.channels))
        # transformers allocates the level embedding with the legacy constructor, which ignores the default device
        # (so a meta build would allocate it) and leaves it uninitialised; re-create it beside the other weights.
        decoder.level_embed = nn.Parameter(torch.empty_like(decoder.level_embed,
                                                            device=decoder.mask_projection.weight.device))
        init_mask2former_parts(decoder, decoder_cfg)
        self.pixel_decoder = decoder

    def load_pretrained_backbone(self) -> None:
        """Copy the ImageNet weights into an EfficientNet-Lite0 backbone (the start of a training run)."""
        if not isinstance(self.backbone, EfficientNetLite0Backbone):
            raise ValueError("only the efficientnet_lite0 backbone has pretrained weights here")
        self.backbone.load_state_dict(imagenet_state_dict())

    def backbone_features(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Images (B,3,S,S), normalised -> {res2: 1/4, res3: 1/8, res4: 1/16, res5: 1/32}."""
        maps = self.backbone(pixels)
        if isinstance(self.backbone, SwinBackbone):
            maps = maps.feature_maps
        return dict(zip(SCALES, maps))

    def decode_pixels(self, features: dict[str, torch.Tensor]) -> PixelFeatures:
        out = self.pixel_decoder([features[name] for name in SCALES])
        return PixelFeatures(mask_features=out.mask_features, multi_scale=tuple(out.multi_scale_features))
