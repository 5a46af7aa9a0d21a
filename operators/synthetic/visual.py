"""First-frame visual prompts (mask, box, points, scribble) derived from a target's visible mask."""

from __future__ import annotations

import cv2
import numpy as np

from .clip import Clip, Prompt, VisualPrompt
from .config import WorldConfig
from .templates import MULTI_OBJECT_TEMPLATE, VISUAL_MODES

INTERIOR_DEPTH = 0.5  # points and scribbles use pixels at least this share of the deepest pixel's depth


def _interior(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (K, 2) x, y well inside `mask`, and the deepest one."""
    depth = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3)
    ys, xs = np.nonzero(depth >= INTERIOR_DEPTH * depth.max())
    deepest = np.unravel_index(int(depth.argmax()), depth.shape)
    return np.stack([xs, ys], axis=1).astype(np.float32), np.array(deepest[::-1], dtype=np.float32)


def _points(rng: np.random.Generator, mask: np.ndarray, count: int) -> np.ndarray:
    """The deepest pixel first (a user's click), then distinct random interior pixels."""
    interior, deepest = _interior(mask)
    extra = rng.choice(len(interior), size=min(count - 1, len(interior)), replace=False)
    return np.concatenate([deepest[None], interior[extra]])


def _scribble(mask: np.ndarray, count: int) -> np.ndarray:
    """A stroke along the interior's principal axis: interior pixels at evenly spaced ranks of projection."""
    interior, _ = _interior(mask)
    centred = interior - interior.mean(axis=0)
    axis = np.linalg.svd(centred, full_matrices=False)[2][0] if len(interior) > 1 else np.array([1.0, 0.0])
    order = np.argsort(centred @ axis, kind="stable")
    ranks = np.unique(np.linspace(0, len(order) - 1, count).round().astype(int))
    return interior[order[ranks]]


def visual_prompt(rng: np.random.Generator, clip: Clip, cfg: WorldConfig, mode: str, target: int) -> VisualPrompt:
    """One frame-0 visual prompt of `mode` for object `target`."""
    mask = clip.masks[0, target]
    data = {"mask": lambda: mask.copy(), "box": lambda: clip.boxes[0, target].copy(),
            "points": lambda: _points(rng, mask, cfg.point_prompt_count),
            "scribble": lambda: _scribble(mask, cfg.scribble_points)}[mode]()
    return VisualPrompt(mode=mode, frame=0, data=data)


def visual_prompts(rng: np.random.Generator, clip: Clip, cfg: WorldConfig) -> list[Prompt]:
    """Every visual mode for one random object shown on frame 0, and a multi-object mask prompt (VOS/VIS
    style) for all objects shown on frame 0 when there are several."""
    shown = np.flatnonzero(clip.visible_px[0] >= cfg.min_visible_px)
    if len(shown) == 0:
        return []
    target = int(shown[rng.integers(len(shown))])
    prompts = [Prompt(kind="visual", subkind=mode, template_id=f"visual.{mode}", targets=(target,),
                      visual=(visual_prompt(rng, clip, cfg, mode, target),)) for mode in VISUAL_MODES]
    if len(shown) > 1:
        targets = tuple(int(i) for i in shown)
        prompts.append(Prompt(kind="visual", subkind="mask", template_id=MULTI_OBJECT_TEMPLATE, targets=targets,
                              visual=tuple(visual_prompt(rng, clip, cfg, "mask", i) for i in targets)))
    return prompts
