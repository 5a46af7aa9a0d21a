"""Compositing a scene into frames and ground truth: painter's order gives occlusion and disjoint masks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .background import Background
from .config import WorldConfig
from .scene import SceneObject
from .shapes import place_polygon, rasterise, shade, texture_pattern
from .vocab import COLOURS


@dataclass(frozen=True)
class Rendered:
    """Pixels and per-object ground truth of a clip (shapes as documented on Clip)."""

    frames: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray
    in_frame: np.ndarray
    occlusion: np.ndarray


def boxes_from_masks(masks: np.ndarray) -> np.ndarray:
    """(..., H, W) bool -> (..., 4) float32 x0, y0, x1, y1 with exclusive ends; zeros for empty masks."""
    rows, cols = masks.any(axis=-1), masks.any(axis=-2)
    height, width = masks.shape[-2:]
    boxes = np.stack([cols.argmax(-1), rows.argmax(-1),
                      width - cols[..., ::-1].argmax(-1), height - rows[..., ::-1].argmax(-1)], axis=-1)
    return np.where(rows.any(-1)[..., None], boxes, 0).astype(np.float32)


def render(objects: list[SceneObject], background: Background, cfg: WorldConfig) -> Rendered:
    """Paint objects back to front over the background; visible masks come from the final label map."""
    count, height, width = len(objects), cfg.height, cfg.width
    frames = np.empty((cfg.num_frames, height, width, 3), dtype=np.uint8)
    masks = np.zeros((cfg.num_frames, count, height, width), dtype=bool)
    amodal = np.zeros((cfg.num_frames, count), dtype=np.int64)
    ids = np.arange(1, count + 1, dtype=np.int16)[:, None, None]
    bases = [np.asarray(COLOURS[o.info.colour], dtype=np.uint8) for o in objects]
    patterns = [shade(COLOURS[o.info.colour]) for o in objects]
    for t in range(cfg.num_frames):
        frame = background.frame(t, height, width)
        labels = np.zeros((height, width), dtype=np.int16)
        for i, obj in enumerate(objects):
            centre, angle = obj.centres[t], float(obj.angles[t])
            bbox, patch = rasterise(place_polygon(obj.info.shape, centre, obj.info.radius_px, angle), height, width)
            amodal[t, i] = patch.sum()
            if amodal[t, i] == 0:
                continue
            x0, y0, x1, y1 = bbox
            labels[y0:y1, x0:x1][patch] = i + 1
            dark = texture_pattern(obj.info.texture, bbox, centre, angle)
            colours = np.where(dark[..., None], patterns[i], bases[i])
            frame[y0:y1, x0:x1][patch] = colours[patch]
        frames[t] = frame
        masks[t] = labels[None] == ids
    visible = masks.sum(axis=(2, 3))
    occlusion = np.where(amodal > 0, 1.0 - visible / np.maximum(amodal, 1), 0.0).astype(np.float32)
    return Rendered(frames=frames, masks=masks, boxes=boxes_from_masks(masks), in_frame=amodal > 0,
                    occlusion=occlusion)
