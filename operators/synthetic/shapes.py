"""Rasterising shapes and textures. Every shape is a polygon on the unit circle, so one code path draws all."""

from __future__ import annotations

from functools import cache

import cv2
import numpy as np

CIRCLE_VERTICES = 48
SUBPIXEL_BITS = 4  # cv2.fillPoly fixed-point shift: edges placed to 1/16 px
STAR_INNER_RADIUS = 0.45
CROSS_ARM_HALF_WIDTH = 0.33
DIAMOND_HALF_WIDTH = 0.62  # narrower than tall so a rotated square never reads as a diamond
STRIPE_PERIOD_PX = 6.0
DOT_PERIOD_PX = 7.0
DOT_RADIUS_PX = 2.0
TEXTURE_SHADE = 0.45  # the pattern colour is the base colour darkened to this fraction


def _regular(n: int, phase: float) -> np.ndarray:
    angles = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _star() -> np.ndarray:
    points = _regular(10, -np.pi / 2)
    points[1::2] *= STAR_INNER_RADIUS
    return points


def _cross() -> np.ndarray:
    a = CROSS_ARM_HALF_WIDTH
    return np.array([[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1], [-a, a], [-1, a], [-1, -a],
                     [-a, -a]], dtype=np.float64)


@cache
def unit_polygon(shape: str) -> np.ndarray:
    """Vertices (V, 2) of `shape` as x, y on the unit circle, centred at the origin, image axes (y down)."""
    makers = {
        "circle": lambda: _regular(CIRCLE_VERTICES, 0.0),
        "square": lambda: _regular(4, np.pi / 4),
        "triangle": lambda: _regular(3, -np.pi / 2),
        "star": _star,
        "hexagon": lambda: _regular(6, 0.0),
        "diamond": lambda: _regular(4, 0.0) * np.array([DIAMOND_HALF_WIDTH, 1.0]),
        "pentagon": lambda: _regular(5, -np.pi / 2),
        "cross": _cross,
    }
    polygon = makers[shape]()
    polygon.setflags(write=False)
    return polygon


def place_polygon(shape: str, centre: np.ndarray, radius: float, angle_deg: float) -> np.ndarray:
    """Vertices of `shape` rotated by `angle_deg`, scaled to `radius` px and moved to `centre` (x, y)."""
    theta = np.deg2rad(angle_deg)
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    return unit_polygon(shape) @ rotation.T * radius + centre


def rasterise(polygon: np.ndarray, height: int, width: int) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """Fill `polygon` clipped to the frame; returns its bbox (x0, y0, x1, y1) and the bool mask inside it.

    Drawing only inside the bounding box keeps the cost proportional to the object, not the frame.
    """
    x0, y0 = np.floor(polygon.min(axis=0)).astype(int)
    x1, y1 = np.ceil(polygon.max(axis=0)).astype(int) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if x1 <= x0 or y1 <= y0:
        return (0, 0, 0, 0), np.zeros((0, 0), dtype=bool)
    patch = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
    fixed = np.round((polygon - (x0, y0)) * (1 << SUBPIXEL_BITS)).astype(np.int32)
    cv2.fillPoly(patch, [fixed], 1, lineType=cv2.LINE_8, shift=SUBPIXEL_BITS)
    return (x0, y0, x1, y1), patch.view(bool)


def texture_pattern(texture: str, bbox: tuple[int, int, int, int], centre: np.ndarray,
                    angle_deg: float) -> np.ndarray:
    """Bool map over `bbox`: True where the texture's darker pattern colour shows.

    The pattern is laid out in the object's own rotated frame, so it moves and turns with the object.
    """
    x0, y0, x1, y1 = bbox
    ys, xs = np.ogrid[y0:y1, x0:x1]
    if texture == "solid":
        return np.zeros((y1 - y0, x1 - x0), dtype=bool)
    theta = np.deg2rad(angle_deg)
    dx, dy = xs - centre[0], ys - centre[1]
    u = dx * np.cos(theta) + dy * np.sin(theta)
    if texture == "striped":
        return np.floor(u / STRIPE_PERIOD_PX).astype(np.int64) % 2 == 1
    v = -dx * np.sin(theta) + dy * np.cos(theta)
    du = np.mod(u, DOT_PERIOD_PX) - DOT_PERIOD_PX / 2
    dv = np.mod(v, DOT_PERIOD_PX) - DOT_PERIOD_PX / 2
    return du * du + dv * dv <= DOT_RADIUS_PX ** 2


def shade(colour: tuple[int, int, int]) -> np.ndarray:
    """The pattern colour of a textured object: its base colour, darkened."""
    return (np.asarray(colour, dtype=np.float32) * TEXTURE_SHADE).astype(np.uint8)
