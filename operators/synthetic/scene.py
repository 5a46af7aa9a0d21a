"""The scene script: which objects exist and where each one is in every frame (no pixels here)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from .clip import MotionKind, ObjectInfo
from .config import WorldConfig
from .vocab import COLOURS, SIZES, TEXTURES

OFFSCREEN_GAP = 1.1  # an entering/leaving object sits this many radii beyond the edge, so it is fully out
AXIS_ANGLES_DEG = (0.0, 90.0, 180.0, 270.0)
EDGES = ("left", "right", "top", "bottom")
MIN_PHASE_STEPS = 2  # a stopping object moves, then rests, for at least this many frame steps each
COPY_COLOUR_PROB = 0.5  # a distractor copies the colour (else the shape) of its source object


@dataclass(frozen=True)
class Constraints:
    """What a split lets the generator draw: the shape classes and the (colour, shape) pairs it excludes."""

    shapes: tuple[str, ...]
    forbidden_pairs: frozenset[tuple[str, str]]


@dataclass(frozen=True)
class SceneObject:
    """One object's attributes and its pose per frame: centres (T, 2) x, y in px, angles (T,) degrees."""

    info: ObjectInfo
    centres: np.ndarray
    angles: np.ndarray


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _sample_attributes(rng: np.random.Generator, cfg: WorldConfig, constraints: Constraints,
                       earlier: list[tuple[str, str]]) -> tuple[str, str]:
    """Colour and shape of a new object; sometimes copies one attribute of an earlier object (a distractor)."""
    colours = list(COLOURS)
    while True:
        colour, shape = _pick(rng, colours), _pick(rng, constraints.shapes)
        if earlier and rng.random() < cfg.distractor_prob:
            source_colour, source_shape = earlier[int(rng.integers(len(earlier)))]
            if rng.random() < COPY_COLOUR_PROB:
                colour = source_colour
            else:
                shape = source_shape
        if (colour, shape) not in constraints.forbidden_pairs:
            return colour, shape


def _direction(rng: np.random.Generator, cfg: WorldConfig) -> np.ndarray:
    if rng.random() < cfg.axis_motion_prob:
        angle = np.deg2rad(_pick(rng, AXIS_ANGLES_DEG))
    else:
        angle = rng.uniform(0, 2 * np.pi)
    return np.array([np.cos(angle), np.sin(angle)])


def _inside(rng: np.random.Generator, cfg: WorldConfig, radius: float) -> np.ndarray:
    return np.array([rng.uniform(radius, cfg.width - radius), rng.uniform(radius, cfg.height - radius)])


def _outside(rng: np.random.Generator, cfg: WorldConfig, radius: float, inside: np.ndarray) -> np.ndarray:
    """A point just beyond a random frame edge, level with `inside`, where the whole shape is out of view."""
    gap = OFFSCREEN_GAP * radius
    edge = _pick(rng, EDGES)
    x, y = inside
    return {"left": np.array([-gap, y]), "right": np.array([cfg.width + gap, y]),
            "top": np.array([x, -gap]), "bottom": np.array([x, cfg.height + gap])}[edge]


def _trajectory(rng: np.random.Generator, cfg: WorldConfig, motion: MotionKind, radius: float) -> np.ndarray:
    """Centres (T, 2): straight lines, optionally halted (stops), frozen (static) or crossing an edge."""
    steps = np.arange(cfg.num_frames, dtype=np.float64)
    last = max(cfg.num_frames - 1, 1)
    start = _inside(rng, cfg, radius)
    if motion in ("enters", "leaves"):
        outside = _outside(rng, cfg, radius, start)
        begin, end = (outside, start) if motion == "enters" else (start, outside)
        return begin + (end - begin) * (steps / last)[:, None]
    if motion == "static":
        return np.repeat(start[None, :], cfg.num_frames, axis=0)
    velocity = _direction(rng, cfg) * rng.uniform(cfg.min_speed, cfg.max_speed) * cfg.side
    if motion == "stops":
        # Moves for at least MIN_PHASE_STEPS steps, then rests for as many (shorter clips keep what fits).
        first = min(MIN_PHASE_STEPS, last)
        halt = int(rng.integers(first, max(first, last - MIN_PHASE_STEPS) + 1))
        steps = np.minimum(steps, halt)
    return start + steps[:, None] * velocity


def sample_scene(rng: np.random.Generator, cfg: WorldConfig, constraints: Constraints) -> list[SceneObject]:
    """Draw the objects of one clip, back to front, with their attributes and per-frame poses."""
    count = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    motion_names = [f.name for f in fields(cfg.motion)]
    weights = np.array([getattr(cfg.motion, name) for name in motion_names])
    objects: list[SceneObject] = []
    for _ in range(count):
        colour, shape = _sample_attributes(rng, cfg, constraints, [(o.info.colour, o.info.shape) for o in objects])
        size = _pick(rng, tuple(SIZES))
        radius = rng.uniform(*SIZES[size]) * cfg.side
        motion = motion_names[int(rng.choice(len(motion_names), p=weights / weights.sum()))]
        info = ObjectInfo(shape=shape, colour=colour, size=size, texture=_pick(rng, TEXTURES),
                          radius_px=float(radius), motion=motion)
        spin = rng.uniform(-cfg.max_spin_deg, cfg.max_spin_deg)
        angles = rng.uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg) + spin * np.arange(cfg.num_frames)
        objects.append(SceneObject(info=info, centres=_trajectory(rng, cfg, motion, radius), angles=angles))
    return objects
