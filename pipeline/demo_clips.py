"""Clips of the synthetic world as video files with their prompts and ground truth: the demo's and the tests'
sources, which the shipped model knows (it was trained on this world)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from operators.overlay import Mp4Writer
from operators.prompt_spec import PromptSpec
from operators.synthetic import WorldConfig, make_clip
from operators.synthetic.clip import Clip


@dataclass(frozen=True)
class DemoClip:
    """A clip written to ``path``, the prompt to send for it, and the ground-truth mask of each frame."""

    path: Path
    prompt: PromptSpec
    ground_truth: np.ndarray  # (T, H, W) bool: the union of the prompt's target objects per frame


def _prompt(clip: Clip, kind: str) -> tuple[PromptSpec, tuple[int, ...]]:
    """The clip's first prompt of ``kind``: "referring" (an expression) or "classes" (a class list, semantic
    segmentation: one mask per listed class present; the shipped tiny model's instance and panoptic outputs are
    still empty, see docs/eval.json)."""
    for prompt in clip.prompts:
        if kind == "referring" and prompt.kind == "referring":
            return PromptSpec(task="referring", text=prompt.text), prompt.targets
        if kind == "classes" and (prompt.kind, prompt.subkind) == ("generic", "semantic"):
            return PromptSpec(task="generic", classes=prompt.classes, generic_mode="semantic"), prompt.targets
    raise ValueError(f"clip {clip.seed} has no {kind} prompt; pick another seed")


def write_demo_clip(seed: int, kind: str, directory: Path, frames: int, fps: int = 10) -> DemoClip:
    """Render test-split clip ``seed`` to ``directory/clip<seed>.mp4`` (H.264) with its ``kind`` prompt."""
    clip = make_clip(seed, "test", WorldConfig(num_frames=frames))
    prompt, targets = _prompt(clip, kind)
    path = Path(directory) / f"clip{seed}-{kind}.mp4"
    with Mp4Writer(path, fps=fps) as writer:
        for frame in clip.frames:
            writer.write(frame)
    return DemoClip(path, prompt, clip.masks[:, list(targets)].any(axis=1))
