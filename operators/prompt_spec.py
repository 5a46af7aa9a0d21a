"""What an operator asks of one stream, as plain data: `PromptSpec`.

A prompt arrives over the control topic or the CLI as JSON, lives in checkpoints and travels to Ray actors, so it
is a small dataclass of strings, numbers and lists with `to_dict` / `from_dict` and validation that names the bad
field. A visual prompt is geometry (boxes, clicks, scribbles, or a COCO RLE mask) drawn on one frame of the stream;
it becomes region masks (`to_task_prompt`) only once a frame's size is known.

    PromptSpec(task="referring", text="the small green triangle")
    PromptSpec(task="generic", classes=("circle", "square"), generic_mode="instance", adapter="default")
    PromptSpec(task="visual", regions=(Region(box=(10, 20, 60, 80)),), frame_seq=120)
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import cv2
import numpy as np
import torch

from models.config import DEFAULT_ADAPTER, VisualPromptConfig
from models.prompts import GENERIC_MODES, TASKS, TaskPrompt
from models.visual_prompts import box_mask, points_mask, scribble_mask
from operators.rle import decode_rle

_ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class PromptError(ValueError):
    """A prompt that cannot be used; the message names the field and what is wrong with it."""


@dataclass(frozen=True)
class Region:
    """One visual-prompt region, exactly one of: a box (x0, y0, x1, y1), clicks [(x, y)], a scribble polyline
    [(x, y)], or a COCO RLE mask {"size": [H, W], "counts": str}. Pixel coordinates on the prompt frame."""

    box: tuple[float, float, float, float] | None = None
    points: tuple[tuple[float, float], ...] | None = None
    scribble: tuple[tuple[float, float], ...] | None = None
    mask: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        given = [f.name for f in fields(self) if getattr(self, f.name) is not None]
        if len(given) != 1:
            raise PromptError(f"a region needs exactly one of box / points / scribble / mask, got {given or 'none'}")
        if self.box is not None:
            object.__setattr__(self, "box", _numbers(self.box, 4, "region box"))
            x0, y0, x1, y1 = self.box
            if x1 < x0 or y1 < y0:
                raise PromptError(f"region box {self.box} must be (x0, y0, x1, y1) with x1 >= x0 and y1 >= y0")
        for name in ("points", "scribble"):
            value = getattr(self, name)
            if value is not None:
                if not value:
                    raise PromptError(f"region {name} needs at least one (x, y)")
                object.__setattr__(self, name, tuple(_numbers(p, 2, f"region {name} point") for p in value))
        if self.mask is not None:
            try:
                decode_rle(self.mask)
            except ValueError as exc:
                raise PromptError(f"region mask: {exc}") from exc

    def rasterise(self, size: tuple[int, int], cfg: VisualPromptConfig) -> torch.Tensor:
        """(H, W) bool mask at the frame size; an RLE mask drawn at another size is resized (nearest)."""
        if self.box is not None:
            return box_mask(self.box, size)
        if self.points is not None:
            return points_mask(list(self.points), size, cfg.point_radius)
        if self.scribble is not None:
            return scribble_mask(list(self.scribble), size, cfg.scribble_width)
        mask = decode_rle(self.mask)
        if mask.shape != size:
            mask = cv2.resize(mask.astype(np.uint8), (size[1], size[0]), interpolation=cv2.INTER_NEAREST) > 0
        return torch.from_numpy(np.ascontiguousarray(mask))

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class PromptSpec:
    """One stream's task and condition, its LoRA adapter, and the id that mask records carry."""

    task: str
    text: str = ""
    classes: tuple[str, ...] = ()
    generic_mode: str = "panoptic"
    regions: tuple[Region, ...] = ()
    frame_seq: int | None = None  # visual prompts: the frame the regions were drawn on (applies from there on)
    adapter: str = DEFAULT_ADAPTER
    recognize_entities: bool = False  # generic / vis: let the LLM name the entities present first (slower)
    prompt_id: str = field(default="")  # empty: derived from the content

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise PromptError(f"task {self.task!r} is not one of {TASKS}")
        if not isinstance(self.text, str):
            raise PromptError(f"text must be a string, got {type(self.text).__name__}")
        if isinstance(self.classes, str) or not all(isinstance(c, str) and c.strip() for c in self.classes):
            raise PromptError(f"classes must be a list of non-empty names, got {self.classes!r}")
        object.__setattr__(self, "classes", tuple(c.strip() for c in self.classes))
        object.__setattr__(self, "regions", tuple(r if isinstance(r, Region) else _region(r) for r in self.regions))
        if self.task in ("referring", "reasoning") and not self.text.strip():
            raise PromptError(f"task {self.task!r} needs a non-empty expression in `text`")
        if self.task in ("generic", "vis") and not self.classes:
            raise PromptError(f"task {self.task!r} needs a non-empty class list in `classes`")
        if len(set(self.classes)) != len(self.classes):
            raise PromptError(f"classes repeat a name: {self.classes}")
        if self.task == "visual" and not self.regions:
            raise PromptError("task 'visual' needs at least one region (box, points, scribble or mask)")
        if self.generic_mode not in GENERIC_MODES:
            raise PromptError(f"generic_mode {self.generic_mode!r} is not one of {GENERIC_MODES}")
        if self.frame_seq is not None and (not isinstance(self.frame_seq, int) or self.frame_seq < 0):
            raise PromptError(f"frame_seq must be a non-negative integer, got {self.frame_seq!r}")
        if not isinstance(self.adapter, str) or not _ADAPTER_NAME.match(self.adapter):
            raise PromptError(f"adapter {self.adapter!r} must be 1-64 of letters, digits, '.', '_', '-'")
        if not isinstance(self.prompt_id, str):
            raise PromptError(f"prompt_id must be a string, got {type(self.prompt_id).__name__}")
        if not self.prompt_id:
            object.__setattr__(self, "prompt_id", self.content_hash())

    def content_hash(self) -> str:
        content = {k: v for k, v in self.to_dict().items() if k != "prompt_id"}
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["classes"] = list(self.classes)
        data["regions"] = [r.to_dict() for r in self.regions]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PromptSpec":
        if not isinstance(data, dict):
            raise PromptError(f"a prompt is a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PromptError(f"unknown prompt field(s) {unknown}; known: {sorted(known)}")
        if "task" not in data:
            raise PromptError("a prompt needs a `task`")
        values = dict(data)
        for name in ("classes", "regions"):
            if name in values:
                if not isinstance(values[name], (list, tuple)):
                    raise PromptError(f"{name} must be a list, got {type(values[name]).__name__}")
                values[name] = tuple(values[name])
        return cls(**values)

    def to_task_prompt(self, size: tuple[int, int], cfg: VisualPromptConfig) -> TaskPrompt:
        """The model's TaskPrompt for frames of `size` (H, W): visual regions rasterised at that size."""
        regions = tuple(r.rasterise(size, cfg) for r in self.regions)
        if any(not bool(m.any()) for m in regions):
            raise PromptError(f"a visual-prompt region lies outside the {size[1]}x{size[0]} frame")
        return TaskPrompt(self.task, text=self.text, classes=self.classes, regions=regions,  # type: ignore[arg-type]
                          generic_mode=self.generic_mode,  # type: ignore[arg-type]
                          recognize_entities=self.recognize_entities)


def _region(value: Any) -> Region:
    if not isinstance(value, dict):
        raise PromptError(f"a region is an object like {{'box': [x0, y0, x1, y1]}}, got {value!r:.80}")
    unknown = sorted(set(value) - {f.name for f in fields(Region)})
    if unknown:
        raise PromptError(f"unknown region field(s) {unknown}; use box, points, scribble or mask")
    return Region(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in value.items()})


def _numbers(value: Any, count: int, what: str) -> tuple[float, ...]:
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise PromptError(f"{what} must be {count} numbers, got {value!r:.80}") from exc
    if len(numbers) != count or not all(np.isfinite(numbers)):
        raise PromptError(f"{what} must be {count} finite numbers, got {value!r:.80}")
    return numbers
