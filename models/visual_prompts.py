"""Visual prompts: points, boxes and scribbles rasterised to masks, and the region feature pooled inside a mask."""

from __future__ import annotations

import torch
from torch import nn


def _grid(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    ys = torch.arange(height, dtype=torch.float32).view(-1, 1)
    xs = torch.arange(width, dtype=torch.float32).view(1, -1)
    return ys, xs


def points_mask(points: list[tuple[float, float]], size: tuple[int, int], radius: int) -> torch.Tensor:
    """Clicks (x, y) in pixels -> discs of `radius`."""
    ys, xs = _grid(*size)
    mask = torch.zeros(size, dtype=torch.bool)
    for x, y in points:
        mask |= (xs - x) ** 2 + (ys - y) ** 2 <= radius**2
    return mask


def box_mask(box: tuple[float, float, float, float], size: tuple[int, int]) -> torch.Tensor:
    """Box (x0, y0, x1, y1) in pixels, inclusive of its edges -> filled rectangle."""
    x0, y0, x1, y1 = box
    ys, xs = _grid(*size)
    return (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)


def scribble_mask(polyline: list[tuple[float, float]], size: tuple[int, int], width: int) -> torch.Tensor:
    """A stroke through (x, y) vertices, `width` pixels thick: the union of discs along each segment."""
    if len(polyline) == 1:
        return points_mask(polyline, size, max(width // 2, 1))
    samples: list[tuple[float, float]] = []
    for (xa, ya), (xb, yb) in zip(polyline[:-1], polyline[1:]):
        steps = max(int(max(abs(xb - xa), abs(yb - ya))), 1)
        for t in torch.linspace(0.0, 1.0, steps + 1).tolist():
            samples.append((xa + t * (xb - xa), ya + t * (yb - ya)))
    return points_mask(samples, size, max(width // 2, 1))


def sample_region_feature(grid: torch.Tensor, mask: torch.Tensor, num_points: int) -> torch.Tensor:
    """Average of `num_points` bilinear samples of a feature grid (D, g, g) inside a mask (H, W) -> (D,).

    Points are the mask's pixels taken at even strides (deterministic), in normalised coordinates, so the result
    does not depend on the mask's resolution relative to the grid.
    """
    coords = mask.nonzero().float()  # (n, 2) as (y, x)
    if coords.numel() == 0:
        raise ValueError("visual-prompt mask is empty")
    index = torch.linspace(0, coords.shape[0] - 1, min(num_points, coords.shape[0])).round().long()
    picked = coords[index]
    height, width = mask.shape
    xy = torch.stack([(picked[:, 1] + 0.5) / width, (picked[:, 0] + 0.5) / height], dim=-1) * 2 - 1
    samples = nn.functional.grid_sample(
        grid.unsqueeze(0), xy.to(grid).view(1, 1, -1, 2), mode="bilinear", padding_mode="border", align_corners=False
    )  # (1, D, 1, n)
    return samples[0, :, 0].mean(dim=-1)
