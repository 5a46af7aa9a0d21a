"""What a stream asks of the model: the task and its condition."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal, get_args

import torch

Task = Literal["referring", "reasoning", "generic", "visual", "vis"]
GenericMode = Literal["panoptic", "semantic", "instance"]
TASKS: tuple[str, ...] = get_args(Task)
GENERIC_MODES: tuple[str, ...] = get_args(GenericMode)


@dataclass
class TaskPrompt:
    """One stream's request.

    referring / reasoning: `text`.  generic / vis: `classes` (any names: the vocabulary is open).
    visual: `regions`, binary masks (H, W) on the frame they were drawn on (see models/visual_prompts.py to
    rasterise points, boxes and scribbles).
    """

    task: Task
    text: str = ""
    classes: tuple[str, ...] = ()
    regions: tuple[torch.Tensor, ...] = field(default=(), repr=False)
    generic_mode: GenericMode = "panoptic"
    recognize_entities: bool = True  # generic: let the LLM name the entities present before the mask tokens

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; expected one of {TASKS}")
        if self.task in ("referring", "reasoning") and not self.text.strip():
            raise ValueError(f"task {self.task!r} needs a non-empty expression in `text`")
        if self.task in ("generic", "vis") and not self.classes:
            raise ValueError(f"task {self.task!r} needs a non-empty class list in `classes`")
        if self.task == "visual" and not self.regions:
            raise ValueError("task 'visual' needs at least one region mask in `regions`")
        for region in self.regions:
            if region.dim() != 2 or not bool(region.any()):
                raise ValueError("each visual-prompt region must be a non-empty 2-D mask")

    def key(self) -> str:
        """Identity of the prompt: the temporal state belongs to it and is reset when it changes."""
        digest = hashlib.sha256()
        digest.update(f"{self.task}|{self.text}|{'|'.join(self.classes)}|{self.generic_mode}".encode())
        for region in self.regions:
            digest.update(region.to(torch.uint8).cpu().numpy().tobytes())
        return digest.hexdigest()[:16]
