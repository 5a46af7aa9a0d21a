"""How each candidate object has moved so far in a stream: a few numbers per mask, measured from the masks themselves.

Not in the paper. One frame's query states cannot say how their object moves (an auxiliary head trained to read
velocity from them could not, docs/training.md "Kinematics head"), yet a third of the referring and reasoning
expressions are about motion ("moving up", "stops", "fastest", "about to leave"). So motion is measured outside the
network: every query's mask is linked to the masks of the earlier frames by overlap, and the chain of centroids
gives each query a descriptor (`describe`). The text side only has to say which motion it wants (a linear head on
E_P, `SegmentationPredictor.motion_head`), and the refer logit adds the weighted sum.

Tracks are one row of numbers and one coarse mask per followed object, so a stream's state stays constant in size.
Coordinates are in units of the frame's shorter side, velocities in `speed_unit`s of it per frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.config import MotionConfig
from models.mask_grid import on_grid, pairwise_iou

# Columns of a track row.
FIRST_FRAME, LAST_FRAME, FIRST_X, FIRST_Y, LAST_X, LAST_Y, PATH, STEP_X, STEP_Y = range(9)
TRACK_COLUMNS = 9
# Descriptor entries: mean velocity since the track began (x, y), mean speed, speed over the last frame, closeness to
# the nearest edge (1 on it, 0 at the frame centre), velocity over the last frame towards that edge, and whether the
# track began after the stream's first frame (an object that entered).
MOTION_FEATURES = 7


@dataclass
class MotionTracks:
    """The objects a stream has followed: rows (N, TRACK_COLUMNS) float and last masks (N, grid, grid) bool."""

    rows: torch.Tensor
    masks: torch.Tensor

    @classmethod
    def empty(cls, grid: int) -> "MotionTracks":
        return cls(torch.zeros(0, TRACK_COLUMNS), torch.zeros(0, grid, grid, dtype=torch.bool))


def centroids(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, h, w) masks (bool or probabilities) of a (H, W) frame -> (N, 2) centre of mass x, y in units of the
    shorter side (NaN for an empty mask)."""
    height, width = size
    h, w = masks.shape[1:]
    weights = masks.float().flatten(1)
    ys = (torch.arange(h, dtype=torch.float32) + 0.5) / h * height
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) / w * width
    grid_x, grid_y = xs.expand(h, w).flatten(), ys[:, None].expand(h, w).flatten()
    total = weights.sum(1)
    centre = torch.stack([weights @ grid_x, weights @ grid_y], dim=1) / total[:, None]
    return torch.where(total[:, None] > 0, centre / min(height, width), torch.full_like(centre, float("nan")))


def start(frame: int, centre: torch.Tensor) -> torch.Tensor:
    """A track row for an object first seen on `frame` at `centre` (2,)."""
    row = torch.zeros(TRACK_COLUMNS)
    row[FIRST_FRAME] = row[LAST_FRAME] = frame
    row[FIRST_X:FIRST_Y + 1] = centre
    row[LAST_X:LAST_Y + 1] = centre
    return row


def advance(row: torch.Tensor, frame: int, centre: torch.Tensor) -> torch.Tensor:
    """The track row after its object is seen again on `frame` at `centre` (2,)."""
    step = (centre - row[LAST_X:LAST_Y + 1]) / max(frame - float(row[LAST_FRAME]), 1.0)
    moved = row.clone()
    moved[LAST_FRAME] = frame
    moved[PATH] = row[PATH] + (centre - row[LAST_X:LAST_Y + 1]).norm()
    moved[LAST_X:LAST_Y + 1] = centre
    moved[STEP_X:STEP_Y + 1] = step
    return moved


def describe(rows: torch.Tensor, size: tuple[int, int], speed_unit: float) -> torch.Tensor:
    """Track rows (N, TRACK_COLUMNS) of a (H, W) frame -> descriptors (N, MOTION_FEATURES)."""
    height, width = size
    extent = torch.tensor([width, height], dtype=torch.float32) / min(height, width)
    frames = (rows[:, LAST_FRAME] - rows[:, FIRST_FRAME]).clamp(min=1.0)
    last, step = rows[:, LAST_X:LAST_Y + 1], rows[:, STEP_X:STEP_Y + 1]
    mean_velocity = (last - rows[:, FIRST_X:FIRST_Y + 1]) / frames[:, None] / speed_unit
    gaps = torch.cat([last, extent - last], dim=1)  # to the left, top, right and bottom edges
    nearest = gaps.argmin(dim=1)
    outward = torch.tensor([[-1.0, 0.0], [0.0, -1.0], [1.0, 0.0], [0.0, 1.0]])[nearest]
    closeness = 1.0 - 2.0 * gaps.min(dim=1).values / extent.min()
    return torch.stack([
        mean_velocity[:, 0], mean_velocity[:, 1],
        rows[:, PATH] / frames / speed_unit,
        step.norm(dim=1) / speed_unit,
        closeness.clamp(0.0, 1.0),
        (step * outward).sum(1) / speed_unit,
        (rows[:, FIRST_FRAME] > 0).float(),
    ], dim=1)


def motion_term(wanted: torch.Tensor, descriptors: torch.Tensor, weight: float) -> torch.Tensor:
    """What the refer logit adds: E_P's motion weights (M,) and the queries' descriptors (Q, M) -> (Q,) weight x
    (w . d - the largest w . d), 0 for the query whose motion fits the expression best, so the term reorders the
    queries without raising any score past what the refer logit gives it."""
    fit = descriptors.to(wanted) @ wanted
    return weight * (fit - fit.max())


def follow(tracks: MotionTracks, masks: torch.Tensor, quality: torch.Tensor, frame: int, size: tuple[int, int],
           cfg: MotionConfig) -> tuple[torch.Tensor, MotionTracks]:
    """This frame's query masks (Q, h, w) bool with their quality (Q,) -> each query's descriptor (Q,
    MOTION_FEATURES) and the tracks for the next frame.

    A query's mask continues the track whose last mask it overlaps most (IoU >= link_iou), else it starts a new
    one; an empty mask gets zeros. Each continued track keeps its best-quality query's mask; masks that continue
    nothing become new tracks (best quality first; one overlapping a kept mask adds none); tracks no mask
    continues end."""
    grid = on_grid(masks, cfg.grid) > 0.5
    centres = centroids(masks, size)
    present = grid.flatten(1).any(1) & ~centres.isnan().any(1)
    overlap = pairwise_iou(grid, tracks.masks) if len(tracks.rows) else torch.zeros(len(grid), 0)
    linked = overlap.max(1) if overlap.shape[1] else None
    rows = torch.zeros(len(grid), TRACK_COLUMNS)
    owner = torch.full((len(grid),), -1, dtype=torch.long)
    for q in present.nonzero().flatten().tolist():
        if linked is not None and linked.values[q] >= cfg.link_iou:
            owner[q] = linked.indices[q]
            rows[q] = advance(tracks.rows[owner[q]], frame, centres[q])
        else:
            rows[q] = start(frame, centres[q])
    keep_rows, keep_masks = [], []
    for track in owner[owner >= 0].unique().tolist():
        members = (owner == track).nonzero().flatten()
        best = members[quality[members].argmax()]
        keep_rows.append(rows[best])
        keep_masks.append(grid[best])
    for q in (present & (owner < 0)).nonzero().flatten()[quality[present & (owner < 0)].argsort(descending=True)]:
        if keep_masks and pairwise_iou(grid[q:q + 1], torch.stack(keep_masks)).max() >= cfg.link_iou:
            continue
        keep_rows.append(rows[q])
        keep_masks.append(grid[q])
    descriptors = describe(rows, size, cfg.speed_unit) * present[:, None]
    if not keep_rows:
        return descriptors, MotionTracks.empty(cfg.grid)
    return descriptors, MotionTracks(torch.stack(keep_rows), torch.stack(keep_masks))
