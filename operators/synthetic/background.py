"""Textured, slowly changing backgrounds and camera effects (noise, defocus blur)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from statistics import NormalDist

import cv2
import numpy as np

from .config import WorldConfig

BACKGROUND_LEVELS = (70.0, 170.0)  # intensity range of the noise grid before desaturation
SATURATION = 0.35  # backgrounds keep this share of their colour, so saturated objects stand out
PATTERNS = ("plain", "stripes", "checker")
PATTERN_PERIOD_PX = (10.0, 28.0)


@dataclass(frozen=True)
class Background:
    """A canvas larger than the frame, panned by `pan_px` per frame and scaled by 1 + `drift` per frame."""

    canvas: np.ndarray  # (H + 2m, W + 2m, 3) float32
    margin: int
    pan_px: np.ndarray  # (2,) x, y
    drift: float

    def frame(self, t: int, height: int, width: int) -> np.ndarray:
        """The uint8 (H, W, 3) view of the background at frame `t`."""
        x, y = np.round(self.margin + self.pan_px * t).astype(int)
        view = self.canvas[y:y + height, x:x + width] * (1.0 + self.drift * t)
        return np.clip(view, 0, 255).astype(np.uint8)


def _pattern(rng: np.random.Generator, height: int, width: int, contrast: float) -> np.ndarray:
    kind = PATTERNS[int(rng.integers(len(PATTERNS)))]
    if kind == "plain":
        return np.zeros((height, width), dtype=np.float32)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    period = rng.uniform(*PATTERN_PERIOD_PX)
    angle = rng.uniform(0, np.pi)
    if kind == "stripes":
        return contrast * np.sin(2 * np.pi * (xs * np.cos(angle) + ys * np.sin(angle)) / period)
    return contrast * np.sign(np.sin(2 * np.pi * xs / period) * np.sin(2 * np.pi * ys / period))


def sample_background(rng: np.random.Generator, cfg: WorldConfig) -> Background:
    """A smooth muted colour field with an optional faint stripe/checker pattern, plus its pan and drift."""
    margin = int(np.ceil(cfg.background_pan * cfg.side * cfg.num_frames)) + 1
    height, width = cfg.height + 2 * margin, cfg.width + 2 * margin
    grid = rng.uniform(*BACKGROUND_LEVELS, size=(cfg.background_grid, cfg.background_grid, 3)).astype(np.float32)
    grey = grid.mean(axis=2, keepdims=True)
    grid = grey + SATURATION * (grid - grey)
    canvas = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    canvas += _pattern(rng, height, width, cfg.background_pattern_contrast)[..., None]
    pan = rng.uniform(-1.0, 1.0, size=2) * cfg.background_pan * cfg.side
    drift = float(rng.uniform(-cfg.background_drift, cfg.background_drift))
    return Background(canvas=canvas, margin=margin, pan_px=pan, drift=drift)


@cache
def _noise_tables(std: float) -> tuple[np.ndarray, np.ndarray]:
    """Lookup tables mapping a uniform byte to the positive and negative part of a Gaussian sample (its
    quantile), so noise costs one random byte and two saturating uint8 operations per value."""
    normal = NormalDist(0.0, std)
    levels = np.round([normal.inv_cdf((i + 0.5) / 256) for i in range(256)])
    return np.clip(levels, 0, 255).astype(np.uint8), np.clip(-levels, 0, 255).astype(np.uint8)


def apply_camera(rng: np.random.Generator, cfg: WorldConfig, frames: np.ndarray) -> None:
    """In place: defocus blur on some clips, then Gaussian sensor noise on every frame."""
    if rng.random() < cfg.blur_prob:
        for frame in frames:
            cv2.GaussianBlur(frame, (0, 0), cfg.blur_sigma_px, dst=frame)
    if cfg.noise_std > 0:
        raise_table, lower_table = _noise_tables(cfg.noise_std)
        for frame in frames:
            draws = np.frombuffer(rng.bytes(frame.size), dtype=np.uint8).reshape(frame.shape)
            # Each draw is either positive or negative, so two saturating steps equal clip(frame + noise).
            cv2.add(frame, cv2.LUT(draws, raise_table), dst=frame)
            cv2.subtract(frame, cv2.LUT(draws, lower_table), dst=frame)
