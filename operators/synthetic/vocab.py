"""Attribute vocabularies of the synthetic world: data only, shared by rendering, prompts and splits."""

from __future__ import annotations

# Shape classes. Each is a polygon on the unit circle (see shapes.py); the shape name is the object's class.
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "hexagon", "diamond", "pentagon", "cross")

# Saturated RGB colours far from each other and from the muted backgrounds (also when darkened for a
# texture pattern, which is why there is no white or black), so a colour word names one hue.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "green": (35, 185, 60),
    "blue": (40, 80, 235),
    "yellow": (240, 220, 30),
    "purple": (155, 55, 205),
    "orange": (250, 140, 20),
    "cyan": (30, 210, 220),
    "pink": (255, 105, 180),
}

# Radius ranges as fractions of the shorter frame side; the gap between them keeps "small" and "large" apart.
SIZES: dict[str, tuple[float, float]] = {"small": (0.05, 0.065), "large": (0.095, 0.12)}

TEXTURES: tuple[str, ...] = ("solid", "striped", "dotted")

# Order in which attribute words are spoken before the noun ("the small striped red circle").
ATTRIBUTE_ORDER: tuple[str, ...] = ("size", "texture", "colour", "shape")

# What the attribute head of a training run predicts per object (PredictorConfig.attribute_classes), in this order.
ATTRIBUTE_VOCABULARIES: dict[str, tuple[str, ...]] = {
    "colour": tuple(COLOURS), "shape": SHAPES, "size": tuple(SIZES), "texture": TEXTURES,
}
