"""Train / val / test by seed range, and what training never sees, so test figures measure generalisation.

train and val draw only seen shapes, colour-shape pairs and phrasings (val measures in-distribution accuracy);
test draws everything, so its clips mix seen and held-out combinations and `novelty` tells them apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from .clip import Clip, Prompt
from .scene import Constraints
from .vocab import SHAPES


@dataclass(frozen=True)
class SplitSpec:
    """Seeds `first_seed` .. `first_seed + size - 1` belong to the split; `restricted` splits avoid held-out."""

    name: str
    first_seed: int
    size: int
    restricted: bool


@dataclass(frozen=True)
class HeldOut:
    """Combinations absent from train and val: shape classes (the open-vocabulary classes), colour-shape
    pairs of seen shapes, and expression template ids (phrasings)."""

    shapes: tuple[str, ...]
    colour_shape: frozenset[tuple[str, str]]
    templates: frozenset[str]


SPLITS: dict[str, SplitSpec] = {spec.name: spec for spec in (
    SplitSpec("train", first_seed=0, size=1_000_000, restricted=True),
    SplitSpec("val", first_seed=1_000_000, size=100_000, restricted=True),
    SplitSpec("test", first_seed=1_100_000, size=100_000, restricted=False),
)}

HELD_OUT = HeldOut(
    shapes=("pentagon", "cross"),
    colour_shape=frozenset({("red", "circle"), ("blue", "square"), ("green", "star"), ("yellow", "hexagon"),
                            ("purple", "triangle")}),
    templates=frozenset({"attribute.is#1", "spatial.left_of#1", "spatial.below#1", "motion.moving_up#1",
                         "motion.stops#1", "reasoning.same_colour#1", "reasoning.largest#1"}),
)


def held_out() -> HeldOut:
    """The combinations training never sees."""
    return HELD_OUT


def split_spec(split: str) -> SplitSpec:
    """The seed range of `split` ("train", "val" or "test")."""
    if split not in SPLITS:
        raise KeyError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
    return SPLITS[split]


def rng_seed(split: str, seed: int) -> int:
    """Global RNG seed of clip `seed` (0-based within the split), so splits never share a clip."""
    spec = split_spec(split)
    if not 0 <= seed < spec.size:
        raise ValueError(f"seed {seed} outside split {split!r} (0 .. {spec.size - 1})")
    return spec.first_seed + seed


def vocabulary(split: str) -> tuple[str, ...]:
    """Shape classes the split may contain (and lists in generic prompts)."""
    if split_spec(split).restricted:
        return tuple(shape for shape in SHAPES if shape not in HELD_OUT.shapes)
    return SHAPES


def constraints(split: str) -> Constraints:
    """What the scene sampler may draw in `split`."""
    forbidden = HELD_OUT.colour_shape if split_spec(split).restricted else frozenset()
    return Constraints(shapes=vocabulary(split), forbidden_pairs=forbidden)


def excluded_templates(split: str) -> frozenset[str]:
    """Template ids the prompt generator must not use in `split`."""
    return HELD_OUT.templates if split_spec(split).restricted else frozenset()


def novelty(prompt: Prompt, clip: Clip) -> tuple[str, ...]:
    """Why a prompt is out of the training distribution: any of "template", "class" (a held-out shape among
    its targets or listed classes), "colour_shape" (a target with a held-out pair); () if fully seen."""
    targets = [clip.objects[i] for i in prompt.targets]
    reasons = []
    if prompt.template_id in HELD_OUT.templates:
        reasons.append("template")
    if any(o.shape in HELD_OUT.shapes for o in targets) or set(prompt.classes) & set(HELD_OUT.shapes):
        reasons.append("class")
    if any((o.colour, o.shape) in HELD_OUT.colour_shape for o in targets):
        reasons.append("colour_shape")
    return tuple(reasons)
