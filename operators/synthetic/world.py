"""The public generator: one deterministic clip per (split, seed), and iteration over a split."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import numpy as np

from .background import apply_camera, sample_background
from .clip import Clip
from .config import WorldConfig
from .prompts import generic_prompts, language_prompts
from .render import render
from .scene import sample_scene
from .splits import constraints, excluded_templates, rng_seed, split_spec, vocabulary
from .visual import visual_prompts

DEFAULT_CONFIG = WorldConfig()


def make_clip(seed: int, split: str = "train", config: WorldConfig = DEFAULT_CONFIG) -> Clip:
    """Clip number `seed` of `split`: same arguments, identical arrays and prompts.

    Scene, background, camera and prompts draw from independent child streams of the clip's seed, so the
    background of a clip does not depend on its objects (see make_background_clip).
    """
    scene_rng, background_rng, camera_rng, prompt_rng = np.random.default_rng(rng_seed(split, seed)).spawn(4)
    objects = sample_scene(scene_rng, config, constraints(split))
    rendered = render(objects, sample_background(background_rng, config), config)
    apply_camera(camera_rng, config, rendered.frames)
    centres = np.stack([o.centres for o in objects], axis=1) if objects else np.zeros((config.num_frames, 0, 2))
    clip = Clip(seed=seed, split=split, frames=rendered.frames, masks=rendered.masks, boxes=rendered.boxes,
                centres=centres.astype(np.float32), in_frame=rendered.in_frame, occlusion=rendered.occlusion,
                objects=tuple(o.info for o in objects))
    clip.prompts = tuple(language_prompts(prompt_rng, clip, config, excluded_templates(split))
                         + generic_prompts(prompt_rng, clip, vocabulary(split))
                         + visual_prompts(prompt_rng, clip, config))
    return clip


def make_background_clip(seed: int, split: str = "train", config: WorldConfig = DEFAULT_CONFIG) -> Clip:
    """A negative sample: clip `seed` of `split` with the same background and camera but no objects; its
    prompts are class lists with no targets."""
    return make_clip(seed, split, replace(config, min_objects=0, max_objects=0))


def iter_split(split: str, config: WorldConfig = DEFAULT_CONFIG, start: int = 0,
               count: int | None = None) -> Iterator[Clip]:
    """Clips `start`, `start + 1`, ... of `split`: `count` of them, or to the end of the split."""
    stop = split_spec(split).size if count is None else start + count
    for seed in range(start, stop):
        yield make_clip(seed, split, config)
