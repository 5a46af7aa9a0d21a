"""Frames (uint8 RGB) -> the normalised square inputs of the two vision encoders. Pure torch, batched."""

from __future__ import annotations

import torch
from torch import nn


def to_model_input(frames: list[torch.Tensor], size: int, mean: tuple[float, ...],
                   std: tuple[float, ...]) -> torch.Tensor:
    """(H, W, 3) uint8 frames, sizes may differ -> (B, 3, size, size) float, resized (aspect not kept), normalised."""
    resized = []
    for frame in frames:
        if frame.dim() != 3 or frame.shape[-1] != 3 or frame.dtype != torch.uint8:
            raise ValueError(f"a frame must be (H, W, 3) uint8 RGB, got {tuple(frame.shape)} {frame.dtype}")
        pixels = frame.permute(2, 0, 1).unsqueeze(0).float() / 255.0
        resized.append(nn.functional.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False,
                                                 antialias=True))
    pixels = torch.cat(resized)
    mean_t = torch.tensor(mean, device=pixels.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=pixels.device).view(1, 3, 1, 1)
    return (pixels - mean_t) / std_t
