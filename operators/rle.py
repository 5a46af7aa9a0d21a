"""Binary masks <-> COCO RLE, the wire format of the masks topic.

COCO RLE is what downstream services in any language already decode
(pycocotools and its ports), so masks travel as ``{"size": [H, W], "counts": str}``
with ``counts`` decoded to a UTF-8 string so that the record stays plain JSON.
"""

from __future__ import annotations

from typing import TypedDict

import numpy as np
from pycocotools import mask as mask_utils


class Rle(TypedDict):
    """Compressed COCO RLE as it appears in a mask record."""

    size: list[int]
    counts: str


def _as_bool_mask(mask: np.ndarray) -> np.ndarray:
    """Validate a 2-D mask and return it as bool, so bad input fails before encoding."""
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {array.shape}")
    if array.dtype != np.bool_:
        if not np.isin(array, (0, 1)).all():
            raise ValueError(f"mask of dtype {array.dtype} must hold only 0 and 1")
        array = array.astype(np.bool_)
    return array


def encode_rle(mask: np.ndarray) -> Rle:
    """Encode an (H, W) binary mask as compressed COCO RLE with a str ``counts``."""
    array = _as_bool_mask(mask)
    encoded = mask_utils.encode(np.asfortranarray(array, dtype=np.uint8))
    return {"size": [int(array.shape[0]), int(array.shape[1])], "counts": encoded["counts"].decode("utf-8")}


def decode_rle(rle: Rle) -> np.ndarray:
    """Decode COCO RLE (``counts`` as str or bytes) back into an (H, W) bool mask."""
    try:
        height, width = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"RLE must be {{'size': [H, W], 'counts': str}}, got {rle!r:.200}") from exc
    if isinstance(counts, str):
        counts = counts.encode("utf-8")
    if not isinstance(counts, bytes):
        raise ValueError(f"RLE counts must be str or bytes, got {type(counts).__name__}")
    return mask_utils.decode({"size": [height, width], "counts": counts}).astype(np.bool_)


def mask_bbox(mask: np.ndarray) -> list[int]:
    """Tight box ``[x, y, w, h]`` in pixels around the mask (COCO convention); zeros if empty."""
    array = _as_bool_mask(mask)
    rows = np.flatnonzero(array.any(axis=1))
    if rows.size == 0:
        return [0, 0, 0, 0]
    cols = np.flatnonzero(array.any(axis=0))
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    return [x0, y0, x1 - x0 + 1, y1 - y0 + 1]
