"""Model sizes as data. `build_hyperseg(preset_config("tiny"))` builds one; see models/build.py."""

from __future__ import annotations

import copy
import dataclasses

from models.config import (
    HyperSegConfig,
    LanguageModelConfig,
    LoraSettings,
    PerceiverConfig,
    PredictorConfig,
    PyramidEncoderConfig,
    VisionEncoderConfig,
)

# Phi-2 (microsoft/phi-2), the LLM of the released HyperSeg-3B.
PHI2 = dict(
    vocab_size=51200,
    hidden_size=2560,
    intermediate_size=10240,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=32,
    partial_rotary_factor=0.4,
    max_position_embeddings=2048,
    rope_theta=10000.0,
    layer_norm_eps=1e-5,
    hidden_act="gelu_new",
    tie_word_embeddings=False,
)

# A few-million-parameter Phi for CPU tests, the demo and the shipped synthetic-world model.
TINY_PHI = dict(
    hidden_size=128,
    intermediate_size=512,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    partial_rotary_factor=0.5,
    max_position_embeddings=1024,
    rope_theta=10000.0,
    layer_norm_eps=1e-5,
    hidden_act="gelu_new",
    tie_word_embeddings=True,
)

PRESETS: dict[str, HyperSegConfig] = {
    "hyperseg-3b": HyperSegConfig(
        name="hyperseg-3b",
        vision=VisionEncoderConfig(),  # SigLIP-SO400M patch14 at 384 px
        pyramid=PyramidEncoderConfig(),  # Swin-B at 1024 px + 6-layer deformable pixel decoder
        perceiver=PerceiverConfig(gated=False),  # the released weights are ungated
        language=LanguageModelConfig(
            model_type="phi", hf_config=PHI2, tokenizer="pretrained", template="hyperseg-3b-release"
        ),
        predictor=PredictorConfig(),
    ),
    "tiny": HyperSegConfig(
        name="tiny",
        vision=VisionEncoderConfig(
            kind="siglip", image_size=128, patch_size=16, hidden_size=96, intermediate_size=384,
            num_layers=3, num_heads=4, feature_layer=-2,
        ),
        pyramid=PyramidEncoderConfig(
            image_size=256, embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), window_size=8,
            feature_size=64, mask_feature_size=64, encoder_layers=2, encoder_feedforward_dim=128,
            num_heads_pixel_decoder=4,
        ),
        perceiver=PerceiverConfig(num_latents=16, latent_dim=64, num_heads=4, head_dim=16, ff_mult=2),
        language=LanguageModelConfig(
            model_type="phi", hf_config=TINY_PHI, tokenizer="byte", template="paper", max_entity_tokens=24,
            lora=LoraSettings(rank=8, alpha=16, dropout=0.05),
        ),
        predictor=PredictorConfig(
            num_queries=16, hidden_dim=64, num_heads=4, dim_feedforward=128, num_layers=3,
            instance_embed_dim=32, train_num_points=4096, max_instances=8,
        ),
    ),
}

# tiny with the ImageNet EfficientNet-Lite0 as a frozen pyramid backbone, because a backbone trained from zero on CPU
# learns colour but hardly shape (docs/training.md). The previous shipped model.
PRESETS["tiny-lite0"] = dataclasses.replace(
    PRESETS["tiny"],
    name="tiny-lite0",
    pyramid=dataclasses.replace(
        PRESETS["tiny"].pyramid, backbone="efficientnet_lite0", pretrained_backbone=True,
        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),  # the normalisation of the TensorFlow training
    ),
    language=dataclasses.replace(PRESETS["tiny"].language, recognize_entities=False),
    frozen=("pyramid.backbone",),
)

# The shipped synthetic-world model: tiny-lite0 with a BPE fitted on the training text (at most 768 entries) instead
# of bytes. Each word of the world is one embedding to learn, and the referring sequence of "the small striped red
# circle" shrinks from 357 to 147 tokens (docs/training.md).
PRESETS["tiny-lite0-bpe"] = dataclasses.replace(
    PRESETS["tiny-lite0"],
    name="tiny-lite0-bpe",
    language=dataclasses.replace(PRESETS["tiny-lite0"].language, tokenizer="fitted",
                                 hf_config={**TINY_PHI, "vocab_size": 768}),
)

# The shipped preset with a deeper, wider LLM (4 layers of 256 instead of 2 of 128, head size 32 kept): the refer pick
# fails on the text side (docs/training.md, "Where the language gap is"), and a reasoning expression needs more than
# one hop (find the star, read its colour, describe the referent). About 3M more parameters and a dearer step;
# docs/training.md ("A deeper, wider LLM") says what one run of it gave.
PRESETS["tiny-lite0-bpe-llm4"] = dataclasses.replace(
    PRESETS["tiny-lite0-bpe"],
    name="tiny-lite0-bpe-llm4",
    language=dataclasses.replace(PRESETS["tiny-lite0-bpe"].language, hf_config={
        **PRESETS["tiny-lite0-bpe"].language.hf_config, "hidden_size": 256, "intermediate_size": 1024,
        "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 8}),
)

# An experiment on top of the shipped model's preset: the refer score also trained by a top-1 ranking CE over queries
# (LossConfig.refer_rank_weight). docs/training.md says what one run of it gave.
PRESETS["tiny-lite0-rank"] = dataclasses.replace(
    PRESETS["tiny-lite0-bpe"],
    name="tiny-lite0-rank",
    loss=dataclasses.replace(PRESETS["tiny-lite0-bpe"].loss, refer_rank_weight=2.0),
)


def preset_config(name: str) -> HyperSegConfig:
    """A fresh copy of a preset (callers may edit it)."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return copy.deepcopy(PRESETS[name])
