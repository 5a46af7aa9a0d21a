"""Plain typed records of one generated clip: objects, prompts and ground truth as numpy arrays."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np

from models.config import VisualPromptConfig
from models.visual_prompts import box_mask, points_mask, scribble_mask

PromptKind = Literal["referring", "reasoning", "generic", "visual"]
VisualMode = Literal["mask", "box", "points", "scribble"]
MotionKind = Literal["linear", "stops", "static", "enters", "leaves"]

# A descriptor names an object by some of its attributes, e.g. (("colour", "red"), ("shape", "circle")).
Descriptor = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ObjectInfo:
    """Attributes of one object; `shape` is its class. `motion` is how it was animated (ground truth of the
    generator; prompts are verified from geometry, not from this label)."""

    shape: str
    colour: str
    size: str
    texture: str
    radius_px: float
    motion: MotionKind

    def attribute(self, name: str) -> str:
        """The value of attribute `name` ("shape", "colour", "size" or "texture")."""
        return getattr(self, name)


@dataclass(frozen=True)
class Query:
    """Structured meaning of a referring/reasoning prompt, kept so the resolution can be re-checked.

    `name` is "<subkind>.<relation>" (e.g. "spatial.left_of"); `target` describes the candidates, `anchor`
    (if any) the single object the relation refers to.
    """

    name: str
    target: Descriptor
    anchor: Descriptor | None = None


@dataclass(frozen=True)
class VisualPrompt:
    """A first-frame visual prompt for one object. `data` depends on `mode`: mask (H, W) bool; box (4,) float32
    x0, y0, x1, y1 (exclusive end); points (K, 2) float32 x, y; scribble (M, 2) float32 x, y polyline."""

    mode: VisualMode
    frame: int
    data: np.ndarray

    def as_mask(self, height: int, width: int, cfg: VisualPromptConfig | None = None) -> np.ndarray:
        """Rasterise to an (H, W) bool mask with serving's own drawing (models/visual_prompts.py), so the model
        trains on the prompts it will be shown."""
        cfg, size = cfg or VisualPromptConfig(), (height, width)
        if self.mode == "mask":
            return self.data.copy()
        if self.mode == "box":
            x0, y0, x1, y1 = self.data.tolist()
            drawn = box_mask((x0, y0, x1 - 1, y1 - 1), size)  # our boxes end exclusively, serving's inclusively
        elif self.mode == "points":
            drawn = points_mask(self.data.tolist(), size, cfg.point_radius)
        else:
            drawn = scribble_mask(self.data.tolist(), size, cfg.scribble_width)
        return drawn.numpy()


@dataclass(frozen=True)
class Prompt:
    """One task instance on a clip.

    kind: 'referring' | 'reasoning' | 'generic' | 'visual'. subkind: attribute/spatial/motion (referring),
    same_colour/same_shape/leaving/largest/smallest/fastest (reasoning), panoptic/semantic/instance (generic),
    mask/box/points/scribble (visual). `targets` are the object indices the answer covers: exactly one for
    referring and reasoning; every object of a listed class for generic; the prompted objects for visual.
    """

    kind: PromptKind
    subkind: str
    template_id: str
    targets: tuple[int, ...]
    text: str = ""
    classes: tuple[str, ...] = ()
    visual: tuple[VisualPrompt, ...] = ()
    query: Query | None = None


@dataclass
class Clip:
    """One clip of the world. Objects are listed back to front (a later index occludes an earlier one).

    frames (T, H, W, 3) uint8 RGB; masks (T, N, H, W) bool, visible parts after occlusion (disjoint);
    boxes (T, N, 4) float32 x0, y0, x1, y1 (exclusive end) of the visible mask, zeros when invisible;
    centres (T, N, 2) float32 amodal centre x, y (may lie outside the frame); in_frame (T, N) bool, any part of
    the unoccluded shape inside the frame; occlusion (T, N) float32, share of the in-frame shape hidden by
    objects in front (0 when out of frame).
    """

    seed: int
    split: str
    frames: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray
    centres: np.ndarray
    in_frame: np.ndarray
    occlusion: np.ndarray
    objects: tuple[ObjectInfo, ...]
    prompts: tuple[Prompt, ...] = ()

    @property
    def classes(self) -> tuple[str, ...]:
        """Class label (shape name) of every object."""
        return tuple(obj.shape for obj in self.objects)

    @cached_property
    def visible_px(self) -> np.ndarray:
        """(T, N) int visible pixel count of every object in every frame (computed once; masks are fixed)."""
        return self.masks.sum(axis=(2, 3))
