"""A deterministic procedural referring-video world: shapes moving over textured backgrounds, with masks,
boxes and prompts of every HyperSeg task kind (referring, reasoning, generic, visual)."""

from .clip import Clip, ObjectInfo, Prompt, Query, VisualPrompt
from .config import MotionMix, WorldConfig
from .corpus import split_texts
from .predicates import anchors, resolve
from .splits import HeldOut, held_out, novelty, vocabulary
from .world import iter_split, make_background_clip, make_clip

__all__ = ["Clip", "HeldOut", "MotionMix", "ObjectInfo", "Prompt", "Query", "VisualPrompt", "WorldConfig",
           "held_out", "iter_split", "make_background_clip", "make_clip", "novelty", "resolve", "split_texts",
           "vocabulary"]
