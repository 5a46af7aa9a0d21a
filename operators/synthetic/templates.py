"""Expression templates (data): each query has several phrasings, so phrasings can be held out of training.

Slots: {target} the candidate phrase ("red circle", or "object" with no shape), {anchor} the anchor phrase,
{noun} and {adjectives} the target phrase split ("circle", "small and red"). A template id is "<query>#<i>".
"""

from __future__ import annotations

from dataclasses import dataclass

from .clip import PromptKind

Fields = tuple[str, ...]

ATTRIBUTE_TARGETS: tuple[Fields, ...] = (
    ("shape",), ("colour",), ("colour", "shape"), ("size", "shape"), ("texture", "shape"),
    ("size", "colour", "shape"), ("texture", "colour", "shape"), ("size", "texture", "colour", "shape"))
RELATION_TARGETS: tuple[Fields, ...] = ((), ("shape",), ("colour",), ("colour", "shape"))
# Anchors are named by the first of these that picks out exactly one object.
ANCHORS: tuple[Fields, ...] = (("shape",), ("colour", "shape"), ("size", "shape"), ("texture", "shape"),
                               ("size", "colour", "shape"), ("size", "texture", "colour", "shape"))
# Comparing colours (shapes) is only an inference when neither phrase already says the colour (shape).
COLOURLESS_ANCHORS: tuple[Fields, ...] = (("shape",), ("size", "shape"), ("texture", "shape"),
                                          ("size", "texture", "shape"))
SHAPELESS_ANCHORS: tuple[Fields, ...] = (("colour",), ("size", "colour"), ("texture", "colour"),
                                         ("size", "texture", "colour"))
# What a query says about its referent through the anchor, beyond the target phrase: "the circle with the same
# colour as the star" names the circle's colour without saying it.
SHARED_WITH_ANCHOR: dict[str, Fields] = {"reasoning.same_colour": ("colour",), "reasoning.same_shape": ("shape",)}


@dataclass(frozen=True)
class QuerySpec:
    """One query: its task kind and subkind, phrasings, which target descriptors and anchors it may use."""

    name: str
    kind: PromptKind
    subkind: str
    phrasings: tuple[str, ...]
    targets: tuple[Fields, ...]
    anchors: tuple[Fields, ...] = ()

    def template_id(self, phrasing: int) -> str:
        """Stable id of one phrasing, e.g. "spatial.left_of#1"."""
        return f"{self.name}#{phrasing}"


def _referring(name: str, phrasings: tuple[str, ...], targets: tuple[Fields, ...] = RELATION_TARGETS,
               anchors: tuple[Fields, ...] = ()) -> QuerySpec:
    return QuerySpec(name, "referring", name.split(".")[0], phrasings, targets, anchors)


def _reasoning(name: str, phrasings: tuple[str, ...], targets: tuple[Fields, ...] = RELATION_TARGETS,
               anchors: tuple[Fields, ...] = ()) -> QuerySpec:
    return QuerySpec(name, "reasoning", name.split(".")[1], phrasings, targets, anchors)


QUERIES: tuple[QuerySpec, ...] = (
    _referring("attribute.is", ("the {target}", "the {noun} that is {adjectives}"), ATTRIBUTE_TARGETS),
    _referring("spatial.left_of", ("the {target} left of the {anchor}", "the {target} to the left of the {anchor}"),
               anchors=ANCHORS),
    _referring("spatial.right_of",
               ("the {target} right of the {anchor}", "the {target} to the right of the {anchor}"), anchors=ANCHORS),
    _referring("spatial.above", ("the {target} above the {anchor}", "the {target} over the {anchor}"),
               anchors=ANCHORS),
    _referring("spatial.below", ("the {target} below the {anchor}", "the {target} under the {anchor}"),
               anchors=ANCHORS),
    _referring("motion.moving_up", ("the {target} moving up", "the {target} that travels upward")),
    _referring("motion.moving_down", ("the {target} moving down", "the {target} that travels downward")),
    _referring("motion.moving_left", ("the {target} moving left", "the {target} that travels leftward")),
    _referring("motion.moving_right", ("the {target} moving right", "the {target} that travels rightward")),
    _referring("motion.stops", ("the {target} that stops", "the {target} that comes to a halt")),
    _referring("motion.static", ("the {target} that does not move", "the motionless {target}")),
    _referring("motion.enters", ("the {target} entering the frame", "the {target} that comes into view")),
    _reasoning("reasoning.same_colour", ("the {target} with the same colour as the {anchor}",
                                         "the {target} painted like the {anchor}"),
               ((), ("shape",)), COLOURLESS_ANCHORS),
    _reasoning("reasoning.same_shape", ("the {target} with the same shape as the {anchor}",
                                        "the {target} shaped like the {anchor}"),
               ((), ("colour",)), SHAPELESS_ANCHORS),
    _reasoning("reasoning.leaving", ("the {target} that is about to leave the frame",
                                     "the {target} that will soon be out of view")),
    _reasoning("reasoning.largest", ("the largest {target}", "the biggest {target}")),
    _reasoning("reasoning.smallest", ("the smallest {target}", "the tiniest {target}")),
    _reasoning("reasoning.fastest", ("the fastest {target}", "the quickest {target}")),
)

GENERIC_SUBKINDS: tuple[str, ...] = ("panoptic", "semantic", "instance")
VISUAL_MODES: tuple[str, ...] = ("mask", "box", "points", "scribble")
MULTI_OBJECT_TEMPLATE = "visual.mask_multi"
