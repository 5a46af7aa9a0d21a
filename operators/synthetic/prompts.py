"""Language and class-list prompts: enumerate candidate queries, keep the unambiguous ones, phrase them."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

import numpy as np

from .clip import Clip, Descriptor, Prompt, Query
from .config import WorldConfig
from .predicates import Facts, resolve_facts
from .templates import GENERIC_SUBKINDS, QUERIES, SHARED_WITH_ANCHOR, Fields, QuerySpec
from .vocab import ATTRIBUTE_ORDER


def describe(attributes: dict[str, str], fields: Fields) -> Descriptor:
    """The descriptor naming `fields` of an object, in speaking order."""
    return tuple((name, attributes[name]) for name in ATTRIBUTE_ORDER if name in fields)


def phrase_parts(descriptor: Descriptor) -> tuple[str, list[str]]:
    """(noun, adjectives) of a descriptor: the shape or "object", and the other values in speaking order."""
    values = dict(descriptor)
    return values.get("shape", "object"), [values[name] for name in ATTRIBUTE_ORDER[:-1] if name in values]


def phrase(descriptor: Descriptor) -> str:
    """Words for a descriptor, e.g. "small red circle"."""
    noun, adjectives = phrase_parts(descriptor)
    return " ".join([*adjectives, noun])


def named_attributes(query: Query) -> frozenset[str]:
    """The referent's attributes a query names: those of its target phrase, and those it shares with its anchor
    (SHARED_WITH_ANCHOR)."""
    return frozenset(name for name, _ in query.target) | frozenset(SHARED_WITH_ANCHOR.get(query.name, ()))


def _enumerate(words: list[str]) -> str:
    """"a", "a and b", "a, b and c"."""
    return " and ".join([", ".join(words[:-1]), words[-1]] if len(words) > 2 else words)


def render_text(spec: QuerySpec, phrasing: int, query: Query) -> str:
    """Fill one phrasing of `spec` with the query's target and anchor."""
    noun, adjectives = phrase_parts(query.target)
    return spec.phrasings[phrasing].format(target=phrase(query.target), noun=noun,
                                           adjectives=_enumerate(adjectives),
                                           anchor=phrase(query.anchor) if query.anchor else "")


def _usable_phrasings(spec: QuerySpec, query: Query, excluded: frozenset[str]) -> list[int]:
    has_adjectives = bool(phrase_parts(query.target)[1])
    return [i for i, text in enumerate(spec.phrasings)
            if spec.template_id(i) not in excluded and (has_adjectives or "{adjectives}" not in text)]


def _anchors(spec: QuerySpec, facts: Facts) -> list[Descriptor | None]:
    """One descriptor per object that can serve as anchor: the first of the spec's forms naming only it."""
    if not spec.anchors:
        return [None]
    anchors = []
    for attributes in facts.attributes:
        for fields in spec.anchors:
            descriptor = describe(attributes, fields)
            if facts.matches(descriptor).sum() == 1:
                anchors.append(descriptor)
                break
    return anchors


def _candidates(spec: QuerySpec, facts: Facts) -> Iterator[Query]:
    targets = sorted({describe(attributes, fields) for attributes in facts.attributes for fields in spec.targets})
    for anchor in _anchors(spec, facts):
        for target in targets:
            yield Query(spec.name, target, anchor)


def language_prompts(rng: np.random.Generator, clip: Clip, cfg: WorldConfig,
                     excluded_templates: frozenset[str]) -> list[Prompt]:
    """Referring and reasoning prompts, at most cfg.max_prompts_per_subkind per subkind, each verified to pick
    out exactly one visible object."""
    facts = Facts.of(clip, cfg)
    found: dict[tuple[str, str], list[tuple[QuerySpec, Query, tuple[int, ...], list[int]]]] = defaultdict(list)
    for spec in QUERIES:
        for query in _candidates(spec, facts):
            phrasings = _usable_phrasings(spec, query, excluded_templates)
            targets = resolve_facts(facts, query) if phrasings else ()
            if targets:
                found[(spec.kind, spec.subkind)].append((spec, query, targets, phrasings))
    prompts = []
    for (kind, subkind), options in found.items():
        for pick in rng.permutation(len(options))[:cfg.max_prompts_per_subkind]:
            spec, query, targets, phrasings = options[pick]
            phrasing = phrasings[int(rng.integers(len(phrasings)))]
            prompts.append(Prompt(kind=kind, subkind=subkind, template_id=spec.template_id(phrasing),
                                  targets=targets, text=render_text(spec, phrasing, query), query=query))
    return prompts


def generic_prompts(rng: np.random.Generator, clip: Clip, vocabulary: tuple[str, ...]) -> list[Prompt]:
    """Class-list prompts. Panoptic and semantic list the split's whole vocabulary; instance lists a random
    part of it (at least half), so some listed classes are absent and some present objects are not asked for.
    Targets are every object whose class is listed."""
    prompts = []
    for subkind in GENERIC_SUBKINDS:
        classes = vocabulary
        if subkind == "instance":
            keep = int(rng.integers((len(vocabulary) + 1) // 2, len(vocabulary) + 1))
            chosen = set(rng.choice(len(vocabulary), size=keep, replace=False).tolist())
            classes = tuple(name for i, name in enumerate(vocabulary) if i in chosen)
        targets = tuple(i for i, name in enumerate(clip.classes) if name in classes)
        prompts.append(Prompt(kind="generic", subkind=subkind, template_id=f"generic.{subkind}", targets=targets,
                              text=", ".join(classes), classes=classes))
    return prompts
