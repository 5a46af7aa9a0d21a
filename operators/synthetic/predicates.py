"""Verifying expressions against a clip's geometry. Each query is a three-valued predicate per object
(true / false / unsure); an expression is kept only if exactly one candidate is true and none is unsure, so
borderline cases (a shape drifting across the anchor, a diagonal mover) never become ambiguous prompts."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .clip import Clip, Descriptor, Query
from .config import WorldConfig

TRUE, FALSE, UNSURE = 1, 0, -1
STILL_PX = 0.5  # a frame step shorter than this counts as standing still
MIN_REST_STEPS = 2  # "stops": at least this many still steps at the end
DIRECTIONS: dict[str, tuple[float, float]] = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0),
                                              "down": (0.0, 1.0)}
SPATIAL_DIRECTIONS = {"left_of": "left", "right_of": "right", "above": "up", "below": "down"}


def _tri(true: np.ndarray, false: np.ndarray) -> np.ndarray:
    return np.where(true, TRUE, np.where(false, FALSE, UNSURE)).astype(np.int8)


def _trailing(still: np.ndarray) -> np.ndarray:
    """(S, N) bool -> (N,) number of True steps at the end of each column."""
    moving_from_end = ~still[::-1]
    first_move = moving_from_end.argmax(axis=0)
    return np.where(moving_from_end.any(axis=0), first_move, still.shape[0])


@dataclass
class Facts:
    """Per-clip quantities every predicate reads, computed once; also caches candidate-independent answers."""

    attributes: list[dict[str, str]]
    visible: np.ndarray  # (T, N) shows at least min_visible_px
    in_frame: np.ndarray  # (T, N)
    centres: np.ndarray  # (T, N, 2)
    radius: np.ndarray  # (N,)
    path_px: np.ndarray  # (N,) distance travelled
    still_tail: np.ndarray  # (N,) still steps at the end
    steps: int  # T - 1
    cfg: WorldConfig
    cache: dict[tuple[str, int | None], np.ndarray] = field(default_factory=dict)
    match_cache: dict[Descriptor, np.ndarray] = field(default_factory=dict)

    @classmethod
    def of(cls, clip: Clip, cfg: WorldConfig) -> Facts:
        """Measure `clip` once."""
        step = np.linalg.norm(np.diff(clip.centres, axis=0), axis=-1)
        return cls(attributes=[{name: o.attribute(name) for name in ("shape", "colour", "size", "texture")}
                               for o in clip.objects],
                   visible=clip.visible_px >= cfg.min_visible_px, in_frame=clip.in_frame, centres=clip.centres,
                   radius=np.array([o.radius_px for o in clip.objects]), path_px=step.sum(axis=0),
                   still_tail=_trailing(step <= STILL_PX), steps=step.shape[0], cfg=cfg)

    def matches(self, descriptor: Descriptor) -> np.ndarray:
        """(N,) bool: objects having every attribute value of `descriptor` (a fresh array)."""
        if descriptor not in self.match_cache:
            self.match_cache[descriptor] = np.array([all(attrs[k] == v for k, v in descriptor)
                                                     for attrs in self.attributes], dtype=bool)
        return self.match_cache[descriptor].copy()

    @property
    def move_px(self) -> float:
        """Net displacement in px that counts as moving."""
        return self.cfg.move_threshold * self.cfg.side


def _spatial(facts: Facts, relation: str, anchor: int) -> np.ndarray:
    direction = np.array(DIRECTIONS[SPATIAL_DIRECTIONS[relation]])
    both = facts.visible & facts.visible[:, [anchor]]
    offset = (facts.centres - facts.centres[:, [anchor]]) @ direction
    seen = both.any(axis=0)
    lowest = np.where(both, offset, np.inf).min(axis=0)
    highest = np.where(both, offset, -np.inf).max(axis=0)
    values = _tri(seen & (lowest > facts.cfg.relation_margin * facts.cfg.side), ~seen | (highest <= 0))
    values[anchor] = FALSE
    return values


def _moving(facts: Facts, direction: str) -> np.ndarray:
    unit = np.array(DIRECTIONS[direction])
    net = facts.centres[-1] - facts.centres[0]
    along = net @ unit
    across = np.abs(net[:, 0] * unit[1] - net[:, 1] * unit[0])
    dominance = facts.cfg.axis_dominance
    return _tri((along >= facts.move_px) & (along >= dominance * across),
                (along < facts.move_px / 2) | (along * dominance <= across))


def _same(facts: Facts, attribute: str, anchor: int) -> np.ndarray:
    value = facts.attributes[anchor][attribute]
    values = _tri(np.array([attrs[attribute] == value for attrs in facts.attributes]), np.True_)
    values[anchor] = FALSE
    return values


def _single(facts: Facts, name: str, anchor: int | None) -> np.ndarray:
    """Answers that do not depend on which objects are candidates."""
    family, relation = name.split(".")
    tail, steps = facts.still_tail, facts.steps
    if family == "attribute":
        return np.full(len(facts.attributes), TRUE, dtype=np.int8)
    if family == "spatial":
        return _spatial(facts, relation, anchor)
    if relation.startswith("moving_"):
        return _moving(facts, relation.removeprefix("moving_"))
    if relation == "stops":
        return _tri((tail >= MIN_REST_STEPS) & (tail < steps) & (facts.path_px >= facts.move_px)
                    & facts.visible[-1], (tail == 0) | (tail == steps))
    if relation == "static":
        return _tri(tail == steps, facts.path_px >= facts.move_px)
    if relation == "enters":
        return _tri(~facts.in_frame[0] & facts.visible[-1], facts.in_frame[0])
    if relation == "leaving":
        return _tri(facts.visible[0] & ~facts.in_frame[-1], facts.in_frame[-1] | ~facts.in_frame[0])
    if relation in ("same_colour", "same_shape"):
        return _same(facts, relation.removeprefix("same_"), anchor)
    raise KeyError(name)


def _comparative(facts: Facts, relation: str, candidates: np.ndarray) -> np.ndarray:
    """Superlatives: true if the value beats every other candidate by the margin ratio, false if beaten."""
    score = {"largest": facts.radius, "smallest": 1.0 / facts.radius, "fastest": facts.path_px}[relation]
    values = np.full(len(score), UNSURE, dtype=np.int8)
    if candidates.sum() < 2:
        return values
    ratio = facts.cfg.superlative_ratio
    for i in np.flatnonzero(candidates):
        rival = score[candidates & (np.arange(len(score)) != i)].max()
        values[i] = TRUE if score[i] >= ratio * rival else FALSE if score[i] * ratio <= rival else UNSURE
    return values


COMPARATIVES = frozenset({"reasoning.largest", "reasoning.smallest", "reasoning.fastest"})


def evaluate(facts: Facts, name: str, candidates: np.ndarray, anchor: int | None) -> np.ndarray:
    """(N,) int8 of TRUE / FALSE / UNSURE for query `name` relative to `anchor` among `candidates`."""
    if name in COMPARATIVES:
        return _comparative(facts, name.split(".")[1], candidates)
    key = (name, anchor)
    if key not in facts.cache:
        facts.cache[key] = _single(facts, name, anchor)
    return facts.cache[key]


def anchors(query: Query, clip: Clip, cfg: WorldConfig) -> tuple[int, ...]:
    """The objects that `query`'s anchor describes ("the star" of "the shape with the same colour as the star"); () for
    a query without one."""
    if query.anchor is None:
        return ()
    return tuple(int(i) for i in np.flatnonzero(Facts.of(clip, cfg).matches(query.anchor)))


def resolve_facts(facts: Facts, query: Query) -> tuple[int, ...]:
    """The single visible object `query` picks out, as a 1-tuple; () when it is ambiguous or picks none."""
    anchor = None
    if query.anchor is not None:
        anchors = np.flatnonzero(facts.matches(query.anchor))
        if len(anchors) != 1:
            return ()
        anchor = int(anchors[0])
    candidates = facts.matches(query.target)
    if anchor is not None:
        candidates[anchor] = False
    values = evaluate(facts, query.name, candidates, anchor)[candidates]
    if (values == UNSURE).any() or (values == TRUE).sum() != 1:
        return ()
    target = int(np.flatnonzero(candidates)[values == TRUE][0])
    return (target,) if facts.visible[:, target].any() else ()


def resolve(query: Query, clip: Clip, cfg: WorldConfig) -> tuple[int, ...]:
    """Re-check a prompt's query on `clip`: the single object it refers to, or () if ambiguous."""
    return resolve_facts(Facts.of(clip, cfg), query)
