"""Metrics against values worked out by hand on 6x6 masks."""

from __future__ import annotations

import numpy as np
import pytest

from operators.metrics import (ALL_KINDS, IoUAccumulator, JFAccumulator, PanopticAccumulator, SemanticAccumulator,
                               boundary, boundary_tolerance_px, ciou, f_measure, giou, iou, jf_sequence,
                               panoptic_quality)

SIZE = 6


def box(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """6x6 mask with rows y0..y1-1 and columns x0..x1-1 set."""
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


EMPTY = np.zeros((SIZE, SIZE), dtype=bool)


def test_iou_by_hand_and_empty_conventions() -> None:
    # 2x3 blocks overlapping in 2x2: intersection 4, union 8.
    assert iou(box(0, 2, 0, 3), box(0, 2, 1, 4)) == pytest.approx(0.5)
    assert iou(EMPTY, EMPTY) == 1.0
    assert iou(box(0, 1, 0, 1), EMPTY) == 0.0
    assert iou(EMPTY, box(0, 1, 0, 1)) == 0.0


def test_boundary_tolerance_follows_the_diagonal() -> None:
    assert boundary_tolerance_px(6, 6) == 1  # ceil(0.008 * 8.49)
    assert boundary_tolerance_px(256, 256) == 3  # ceil(2.90)
    assert boundary_tolerance_px(480, 854) == 8  # DAVIS 480p: ceil(7.84)


def test_boundary_is_the_inner_ring_and_ignores_the_frame_edge() -> None:
    square = box(1, 5, 1, 5)
    assert (boundary(square) == (square & ~box(2, 4, 2, 4))).all()  # 12-pixel ring
    # A block cut by the image edge only has a boundary on its inner side.
    assert (boundary(box(0, 6, 0, 3)) == box(0, 6, 2, 3)).all()
    assert not boundary(np.ones((SIZE, SIZE), dtype=bool)).any()


def test_f_shift_within_tolerance_is_perfect_and_beyond_is_not() -> None:
    gt = box(1, 5, 1, 5)
    assert f_measure(box(1, 5, 2, 6), gt) == 1.0  # ring shifted 1 px, tolerance 1 px
    # Half-plane edges at x = 2 and x = 4: two pixels apart, beyond the 1 px tolerance.
    assert f_measure(box(0, 6, 0, 5), box(0, 6, 0, 3)) == 0.0
    assert f_measure(box(0, 6, 0, 5), box(0, 6, 0, 3), tolerance_px=2) == 1.0


def test_f_partial_match_by_hand() -> None:
    gt = box(0, 6, 0, 3)  # boundary: column 2, 6 pixels
    pred = box(0, 3, 0, 3) | box(3, 6, 0, 5)  # boundary: (2,0..2), (3,3), (4,3..5) as (x, y): 7 pixels
    # Precision: the column-2 pixels and (3,3) lie within 1 px of the gt edge: 4/7.
    # Recall: gt (2,0..3) lie within 1 px of the predicted edge: 4/6.  F = 2PR/(P+R) = 8/13.
    assert f_measure(pred, gt) == pytest.approx(8 / 13)


def test_f_empty_conventions() -> None:
    assert f_measure(EMPTY, EMPTY) == 1.0
    assert f_measure(box(1, 3, 1, 3), EMPTY) == 0.0
    assert f_measure(EMPTY, box(1, 3, 1, 3)) == 0.0


def test_jf_sequence_means_j_and_f_over_frames() -> None:
    gt = np.stack([box(1, 5, 1, 5), EMPTY, EMPTY])
    pred = np.stack([box(1, 5, 1, 5), box(0, 1, 0, 1), EMPTY])
    score = jf_sequence(pred, gt)
    assert (score.j, score.f, score.count) == (pytest.approx(2 / 3), pytest.approx(2 / 3), 3)
    assert score.jf == pytest.approx(2 / 3)


def test_ciou_and_giou_by_hand() -> None:
    preds = np.stack([box(0, 2, 0, 3), EMPTY, box(0, 1, 0, 1)])
    gts = np.stack([box(0, 2, 1, 4), EMPTY, box(0, 3, 0, 1)])
    # Intersections 4, 0, 1; unions 8, 0, 3.
    assert ciou(preds, gts) == pytest.approx(5 / 11)
    assert giou(preds, gts) == pytest.approx((0.5 + 1.0 + 1 / 3) / 3)
    accumulator = IoUAccumulator()
    for pred, gt in zip(preds, gts):
        accumulator.add(pred, gt)
    assert (accumulator.ciou, accumulator.giou) == (pytest.approx(5 / 11), pytest.approx(11 / 18))
    assert IoUAccumulator().ciou == 1.0


def test_jf_accumulator_weighs_expressions_equally() -> None:
    accumulator = JFAccumulator()
    for _ in range(3):  # three perfect frames
        accumulator.add_frame("e1", "motion", box(1, 5, 1, 5), box(1, 5, 1, 5))
    accumulator.add_frame("e2", "motion", EMPTY, box(1, 5, 1, 5))  # one wrong frame: J = F = 0
    accumulator.add_frame("e3", "spatial", box(0, 2, 0, 3), box(0, 2, 1, 4))  # J = 0.5
    scores = accumulator.scores()
    assert scores["motion"].jf == pytest.approx(0.5) and scores["motion"].count == 2
    assert scores["spatial"].j == pytest.approx(0.5)
    f_e3 = f_measure(box(0, 2, 0, 3), box(0, 2, 1, 4))
    assert scores[ALL_KINDS].j == pytest.approx((1 + 0 + 0.5) / 3)
    assert scores[ALL_KINDS].f == pytest.approx((1 + 0 + f_e3) / 3)
    with pytest.raises(ValueError):
        accumulator.add_frame("e1", "spatial", EMPTY, EMPTY)


def test_panoptic_quality_by_hand() -> None:
    gt = np.stack([box(0, 2, 0, 2), box(0, 2, 4, 6), box(4, 6, 0, 3)])
    gt_classes = ["circle", "circle", "square"]
    pred = np.stack([box(0, 2, 0, 3), box(0, 1, 4, 6), box(4, 6, 0, 3), box(3, 4, 3, 6)])
    pred_classes = ["circle", "circle", "square", "star"]
    # circle: one TP at IoU 4/6, one FP and one FN at IoU exactly 0.5 (not > 0.5): PQ = (2/3) / 2 = 1/3.
    # square: exact match, PQ 1.  star: one FP, PQ 0.
    accumulator = PanopticAccumulator()
    accumulator.add(pred, pred_classes, gt, gt_classes)
    assert accumulator.per_class() == {"circle": pytest.approx(1 / 3), "square": 1.0, "star": 0.0}
    assert accumulator.pq == pytest.approx(4 / 9)
    assert panoptic_quality(pred, pred_classes, gt, gt_classes) == pytest.approx(4 / 9)


def test_panoptic_quality_needs_the_class_to_match_and_handles_no_predictions() -> None:
    gt = box(0, 2, 0, 2)[None]
    assert panoptic_quality(gt.copy(), ["square"], gt, ["circle"]) == 0.0
    assert panoptic_quality(np.zeros((0, SIZE, SIZE), dtype=bool), [], gt, ["circle"]) == 0.0


def test_semantic_miou_by_hand() -> None:
    gt = np.zeros((SIZE, SIZE), dtype=np.int64)
    gt[:, 3:] = 1
    pred = np.zeros_like(gt)
    pred[:, 2:] = 1
    gt[0, 0] = -1  # ignored
    accumulator = SemanticAccumulator(num_classes=3)
    accumulator.add(pred, gt)
    # class 0: intersection 11 (12 minus the ignored pixel), union 17; class 1: 18 / 24; class 2 absent.
    assert accumulator.miou == pytest.approx((11 / 17 + 18 / 24) / 2)
