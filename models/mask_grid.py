"""Masks compared on a coarse grid: the visual-prompt continuity prior (`postprocess.continuity`) and the motion
term's linking of masks over frames (`motion.follow`) both pool masks onto a grid and take pairwise IoUs."""

from __future__ import annotations

import torch
from torch import nn


def on_grid(masks: torch.Tensor, grid: int) -> torch.Tensor:
    """(N, h, w) masks or probabilities of any size -> (N, grid, grid) mean over each grid cell."""
    return nn.functional.adaptive_avg_pool2d(masks.float().unsqueeze(0), grid)[0]


def pairwise_iou(masks: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """(N, ...) and (M, ...) masks, binary or probabilities (a soft IoU) -> (N, M) IoU; 0 where both are empty."""
    a, b = masks.flatten(1).float(), others.flatten(1).float()
    intersection = a @ b.T
    union = a.sum(1, keepdim=True) + b.sum(1) - intersection
    return intersection / union.clamp(min=1.0)
