"""COCO RLE round trips and boxes, checked against pycocotools' own area and box."""

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from operators.rle import decode_rle, encode_rle, mask_bbox


@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (272, 640)])
def test_random_masks_round_trip_as_json(shape: tuple[int, int]) -> None:
    mask = np.random.default_rng(0).random(shape) > 0.6
    rle = encode_rle(mask)
    assert rle["size"] == list(shape) and isinstance(rle["counts"], str)
    assert np.array_equal(decode_rle(json.loads(json.dumps(rle))), mask)


def test_empty_and_full_masks() -> None:
    for mask in (np.zeros((5, 9), bool), np.ones((5, 9), bool)):
        assert np.array_equal(decode_rle(encode_rle(mask)), mask)
    assert mask_bbox(np.zeros((5, 9), bool)) == [0, 0, 0, 0]
    assert mask_bbox(np.ones((5, 9), bool)) == [0, 0, 9, 5]


def test_agrees_with_pycocotools_area_and_box() -> None:
    mask = np.zeros((40, 60), np.uint8)
    mask[10:20, 5:45] = 1
    mask[30, 50] = 1
    rle = encode_rle(mask)
    coco = {"size": rle["size"], "counts": rle["counts"].encode()}
    assert int(mask_utils.area(coco)) == int(mask.sum())
    assert mask_bbox(mask) == [5, 10, 46, 21] == [int(v) for v in mask_utils.toBbox(coco)]


def test_bytes_counts_also_decode() -> None:
    mask = np.eye(4, dtype=bool)
    rle = encode_rle(mask)
    assert np.array_equal(decode_rle({"size": rle["size"], "counts": rle["counts"].encode()}), mask)


@pytest.mark.parametrize(
    ("bad", "message"),
    [(np.zeros((2, 2, 2), bool), "2-D"), (np.array([[0, 2], [1, 0]]), "only 0 and 1")],
)
def test_bad_masks_are_rejected(bad: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_rle(bad)


@pytest.mark.parametrize("bad", [{"counts": "abc"}, {"size": [2, 2], "counts": 5}, "not a dict"])
def test_bad_rle_is_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match="RLE"):
        decode_rle(bad)  # type: ignore[arg-type]
