"""Synthetic-world clips -> training samples (models.training.TrainingSample), tasks mixed by configured ratios.

A step's batch is either images (one frame per sample) or short clips (`clip_frames` consecutive frames), chosen by
`clip_batch_share`. Every sample comes from its own clip; which clip, prompt and frames is a pure function of
(seed, step), so a run is reproducible and resumes without any sampler state.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from models import motion
from models.config import VisualPromptConfig
from models.losses import NOT_REFERRED, REFERRED, FrameTarget
from models.predictor import KINEMATICS
from models.prompts import TaskPrompt
from models.training import TrainingSample
from operators.frame_codec import decode_jpeg, encode_jpeg
from operators.synthetic import Clip, Prompt, WorldConfig, anchors, make_clip
from operators.synthetic.prompts import named_attributes
from operators.synthetic.splits import split_spec
from operators.synthetic.vocab import ATTRIBUTE_VOCABULARIES

# Expressions only a sequence of frames can answer; image samples never use them.
TEMPORAL_SUBKINDS = frozenset({"motion", "leaving", "fastest"})


@dataclass(frozen=True)
class TaskMix:
    """Relative share of each task kind among the samples (normalised when drawn)."""

    referring: float = 0.35
    reasoning: float = 0.2
    generic: float = 0.2
    visual: float = 0.25

    def kinds(self) -> tuple[tuple[str, ...], np.ndarray]:
        names = ("referring", "reasoning", "generic", "visual")
        weights = np.array([getattr(self, name) for name in names], dtype=np.float64)
        if (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"task mix weights must be >= 0 with a positive sum, got {weights.tolist()}")
        return names, weights / weights.sum()


@dataclass(frozen=True)
class SampleConfig:
    mix: TaskMix = field(default_factory=TaskMix)
    world: WorldConfig = field(default_factory=WorldConfig)
    split: str = "train"
    clip_frames: int = 3  # frames per clip sample (the temporal adapter learns over these)
    clip_batch_share: float = 0.5  # share of steps whose batch is clips rather than images
    image_batch_size: int = 8
    clip_batch_size: int = 3
    visual: VisualPromptConfig = field(default_factory=VisualPromptConfig)  # how clicks and scribbles are drawn
    # Referring and reasoning targets hold every visible object, the referent labelled REFERRED and the rest
    # NOT_REFERRED, so the refer score learns to pick the referent among segmented look-alikes. Off (how the models
    # before the shipped one trained): only the referent (docs/training.md).
    referring_negatives: bool = True
    # Codec augmentation: this share of the samples sees its clip's frames through a JPEG round trip at a quality
    # drawn from jpeg_qualities (inclusive), as a stream's frames reach the model after ingest (quality 85). 0: the
    # rendered pixels only, as every shipped model so far trained.
    jpeg_share: float = 0.0
    jpeg_qualities: tuple[int, int] = (50, 95)

    def __post_init__(self) -> None:
        low, high = self.jpeg_qualities
        if not 0.0 <= self.jpeg_share <= 1.0 or not 1 <= low <= high <= 100:
            raise ValueError(f"jpeg_share must be in 0..1 and jpeg_qualities a range within 1..100, got "
                             f"{self.jpeg_share} and {self.jpeg_qualities}")


def jpeg_coded(clip: Clip, quality: int) -> Clip:
    """The clip with every frame through a JPEG round trip at `quality` (ground truth unchanged)."""
    return replace(clip, frames=np.stack([decode_jpeg(encode_jpeg(frame, quality)) for frame in clip.frames]))


def _visible(clip: Clip, t: int, objects: tuple[int, ...], min_px: int = 1) -> list[int]:
    return [i for i in objects if clip.visible_px[t, i] >= min_px]


def attribute_classes() -> tuple[int, ...]:
    """The attribute head's vocabulary sizes for this world (PredictorConfig.attribute_classes)."""
    return tuple(len(values) for values in ATTRIBUTE_VOCABULARIES.values())


def object_attributes(clip: Clip, objects: list[int]) -> torch.Tensor:
    """(K, A) index of each object's value of every attribute in ATTRIBUTE_VOCABULARIES."""
    rows = [[values.index(clip.objects[i].attribute(name)) for name, values in ATTRIBUTE_VOCABULARIES.items()]
            for i in objects]
    return torch.tensor(rows, dtype=torch.long).view(len(objects), len(ATTRIBUTE_VOCABULARIES))


def object_kinematics(clip: Clip, objects: list[int], t: int, seen_before: bool, speed_unit: float) -> torch.Tensor:
    """(K, KINEMATICS) each object's amodal centre on frame t as a fraction of the frame's width and height, and its
    displacement since frame t-1 in units of `speed_unit` (a fraction of the shorter side per frame), so both lie
    near 0..1 and -1..1; the velocity is NaN (unknown to the model) unless `seen_before`, frame t-1 being in the
    sample."""
    height, width = clip.frames.shape[1:3]
    centres = clip.centres[t, objects] / np.array([width, height], dtype=np.float32)
    velocity = np.full_like(centres, np.nan)
    if seen_before:
        velocity = (clip.centres[t, objects] - clip.centres[t - 1, objects]) / (min(height, width) * speed_unit)
    kinematics = np.concatenate([centres, velocity], axis=-1).astype(np.float32)
    return torch.from_numpy(kinematics).view(len(objects), KINEMATICS)


def object_motion(clip: Clip, objects: list[int], t: int, speed_unit: float) -> torch.Tensor:
    """(K, MOTION_FEATURES) each object's motion descriptor on frame t, followed from the clip's first frame on its
    masks' centroids (models/motion.py, as a stream follows its candidates' masks at inference)."""
    size = clip.frames.shape[1:3]
    rows = []
    for i in objects:
        seen = [s for s in range(t + 1) if clip.visible_px[s, i] > 0]
        centres = motion.centroids(torch.from_numpy(clip.masks[seen, i]), size)
        row = motion.start(seen[0], centres[0])
        for frame, centre in zip(seen[1:], centres[1:]):
            row = motion.advance(row, frame, centre)
        rows.append(row)
    if not rows:
        return torch.zeros(0, motion.MOTION_FEATURES)
    return motion.describe(torch.stack(rows), size, speed_unit)


def named_attribute_columns(prompt: Prompt) -> torch.Tensor | None:
    """(A,) bool: which columns of object_attributes a referring / reasoning prompt names; None for other tasks."""
    if prompt.query is None:
        return None
    named = named_attributes(prompt.query)
    return torch.tensor([name in named for name in ATTRIBUTE_VOCABULARIES], dtype=torch.bool)


def _frame_target(clip: Clip, t: int, objects: list[int], prompt_index: list[int], seen_before: bool,
                  speed_unit: float, named: torch.Tensor | None, anchor: torch.Tensor | None) -> FrameTarget:
    masks = torch.from_numpy(clip.masks[t, objects]) if objects else torch.zeros(0, *clip.masks.shape[2:],
                                                                                   dtype=torch.bool)
    return FrameTarget(masks=masks, prompt_index=torch.tensor(prompt_index, dtype=torch.long),
                       attributes=object_attributes(clip, objects),
                       kinematics=object_kinematics(clip, objects, t, seen_before, speed_unit),
                       named_attributes=named, motion=object_motion(clip, objects, t, speed_unit), anchor=anchor)


def task_prompt(prompt: Prompt, clip: Clip, visual: VisualPromptConfig) -> TaskPrompt:
    """The model-side prompt of a world prompt (visual prompts rasterised to region masks)."""
    if prompt.kind in ("referring", "reasoning"):
        return TaskPrompt(prompt.kind, text=prompt.text)
    if prompt.kind == "generic":
        return TaskPrompt("generic", classes=prompt.classes, generic_mode=prompt.subkind)
    height, width = clip.frames.shape[1:3]
    regions = tuple(torch.from_numpy(v.as_mask(height, width, visual)) for v in prompt.visual)
    return TaskPrompt("visual", regions=regions)


def sample_from_prompt(clip: Clip, prompt: Prompt, start: int, length: int, visual: VisualPromptConfig,
                       referring_negatives: bool = True, world: WorldConfig = WorldConfig()) -> TrainingSample:
    """Frames start .. start + length - 1 of `clip` (made under `world`) under `prompt`, with the visible targets
    of each frame (for referring prompts also the other visible objects, as negatives, when `referring_negatives`,
    those the expression names as its anchor marked); velocities in units of the world's max_speed
    (object_kinematics)."""
    frames = range(start, start + length)
    referring = prompt.kind in ("referring", "reasoning")
    shown = tuple(range(len(clip.objects))) if referring and referring_negatives else prompt.targets
    targets, ids, entities = [], [], []
    named = named_attribute_columns(prompt)
    named_anchor = anchors(prompt.query, clip, world) if prompt.query is not None else ()
    for t in frames:
        visible = _visible(clip, t, shown)
        anchor = None
        if referring:
            index = [REFERRED if i in prompt.targets else NOT_REFERRED for i in visible]
            anchor = torch.tensor([i in named_anchor for i in visible], dtype=torch.bool)
        elif prompt.kind == "generic":
            index = [prompt.classes.index(clip.objects[i].shape) for i in visible]
            entities.append(tuple(name for name in prompt.classes if prompt.classes.index(name) in index))
        else:
            index = [prompt.targets.index(i) for i in visible]
        targets.append(_frame_target(clip, t, visible, index, t > start, world.max_speed, named, anchor))
        ids.append(torch.tensor(visible, dtype=torch.long))
    region_frame = None
    if prompt.kind == "visual":
        region_frame = torch.from_numpy(clip.frames[prompt.visual[0].frame])
    return TrainingSample(frames=torch.from_numpy(clip.frames[start:start + length]),
                          prompt=task_prompt(prompt, clip, visual), targets=targets, object_ids=ids,
                          entities=entities if prompt.kind == "generic" else None, region_frame=region_frame)


def _usable(prompt: Prompt, length: int) -> bool:
    return length > 1 or prompt.subkind not in TEMPORAL_SUBKINDS


def draw_sample(rng: np.random.Generator, cfg: SampleConfig, length: int) -> TrainingSample:
    """One sample of `length` frames from a random clip: task by the mix, then a prompt of that task, and the
    frames JPEG-coded for a `jpeg_share` of the samples."""
    kinds, weights = cfg.mix.kinds()
    size = split_spec(cfg.split).size
    while True:
        clip = make_clip(int(rng.integers(size)), cfg.split, cfg.world)
        kind = kinds[int(rng.choice(len(kinds), p=weights))]
        options = [p for p in clip.prompts if p.kind == kind and _usable(p, length)]
        if not options:
            continue  # e.g. no verifiable reasoning expression in this clip: draw another clip
        prompt = options[int(rng.integers(len(options)))]
        start = int(rng.integers(clip.frames.shape[0] - length + 1))
        if cfg.jpeg_share and rng.random() < cfg.jpeg_share:
            clip = jpeg_coded(clip, int(rng.integers(cfg.jpeg_qualities[0], cfg.jpeg_qualities[1] + 1)))
        return sample_from_prompt(clip, prompt, start, length, cfg.visual, cfg.referring_negatives, cfg.world)


def batch_for_step(cfg: SampleConfig, seed: int, step: int) -> list[TrainingSample]:
    """The batch of training step `step` of a run seeded `seed` (images or clips, by clip_batch_share)."""
    rng = np.random.default_rng([seed, step])
    if rng.random() < cfg.clip_batch_share:
        return [draw_sample(rng, cfg, cfg.clip_frames) for _ in range(cfg.clip_batch_size)]
    return [draw_sample(rng, cfg, 1) for _ in range(cfg.image_batch_size)]
