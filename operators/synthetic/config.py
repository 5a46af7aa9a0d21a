"""World configuration: every tunable of the generator in one frozen dataclass, so presets are plain data."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MotionMix:
    """Relative probabilities of each motion kind an object is given (normalised when sampled)."""

    linear: float = 0.40
    stops: float = 0.15
    static: float = 0.15
    enters: float = 0.15
    leaves: float = 0.15


@dataclass(frozen=True)
class WorldConfig:
    """Generator settings. Distances are fractions of the shorter frame side unless their name says px."""

    height: int = 256
    width: int = 256
    num_frames: int = 8
    min_objects: int = 3
    max_objects: int = 6
    # Probability that a new object copies the colour or the shape of an earlier one (a distractor).
    distractor_prob: float = 0.6
    motion: MotionMix = MotionMix()
    # Share of linear movers that go along an axis (clean "moving up" targets); the rest pick any angle.
    axis_motion_prob: float = 0.7
    min_speed: float = 0.02  # per frame
    max_speed: float = 0.045  # per frame
    max_rotation_deg: float = 10.0
    max_spin_deg: float = 1.5  # per frame
    # Background: low-resolution noise grid upsampled, panned slowly and drifting in brightness.
    background_grid: int = 6
    background_pan: float = 0.01  # per frame, at most
    background_drift: float = 0.02  # relative brightness change per frame, at most
    background_pattern_contrast: float = 18.0  # intensity units
    noise_std: float = 4.0  # intensity units, Gaussian camera noise
    blur_prob: float = 0.3
    blur_sigma_px: float = 1.0
    # Prompt generation.
    max_prompts_per_subkind: int = 2
    min_visible_px: int = 20  # a target must show at least this many pixels in some frame
    relation_margin: float = 0.04  # centres must differ by this much for left/right/above/below
    move_threshold: float = 0.08  # net displacement that counts as moving
    axis_dominance: float = 2.0  # main axis / other axis displacement for a direction word
    superlative_ratio: float = 1.15  # largest/fastest must beat the runner-up by this factor
    point_prompt_count: int = 3
    scribble_points: int = 12

    @property
    def side(self) -> int:
        """Shorter frame side in px, the unit of all fractional distances."""
        return min(self.height, self.width)
