"""Vanilla vision encoder F_CLIP: a transformers SigLIP or CLIP vision tower and a 2-layer GELU projector."""

from __future__ import annotations

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel, SiglipVisionConfig, SiglipVisionModel

from models.config import VisionEncoderConfig


def _build_tower(cfg: VisionEncoderConfig) -> nn.Module:
    common = dict(
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
    )
    if cfg.kind == "siglip":
        # The attention-pooling head is unused: HyperSeg takes patch tokens from an inner layer.
        return SiglipVisionModel(SiglipVisionConfig(vision_use_head=False, **common))
    if cfg.kind == "clip":
        return CLIPVisionModel(CLIPVisionConfig(**common))
    raise ValueError(f"unknown vision encoder kind {cfg.kind!r} (expected 'siglip' or 'clip')")


class VisionProjector(nn.Sequential):
    """Linear -> GELU -> Linear from the vision width into the LLM width (LLaVA's mlp2x_gelu)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))


class VisionEncoder(nn.Module):
    """Images (B,3,S,S), normalised -> projected patch tokens (B, grid*grid, llm_width)."""

    def __init__(self, cfg: VisionEncoderConfig, llm_width: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.tower = _build_tower(cfg)
        self.projector = VisionProjector(cfg.hidden_size, llm_width)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        hidden = self.tower(pixel_values=pixels, output_hidden_states=True).hidden_states[self.cfg.feature_layer]
        if self.cfg.kind == "clip":
            hidden = hidden[:, 1:]  # drop the class token: only patch tokens form the grid
        return self.projector(hidden)
