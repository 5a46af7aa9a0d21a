"""Segmentation metrics with the definitions of the HyperSeg brief (DAVIS J/F, cIoU/gIoU, PQ, mIoU).

Masks are bool arrays. Conventions: an empty union counts as IoU 1 (predicting nothing where there is nothing
is right); two empty boundaries count as F 1, one empty boundary as F 0.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import cv2
import numpy as np

BOUNDARY_TOLERANCE = 0.008  # DAVIS: share of the image diagonal
MATCH_IOU = 0.5  # PQ: a prediction matches a ground-truth segment above this IoU (the match is then unique)
ALL_KINDS = "all"


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Region similarity J of one mask pair; 1.0 when both are empty."""
    union = np.logical_or(pred, gt).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, gt).sum() / union)


def boundary_tolerance_px(height: int, width: int) -> int:
    """DAVIS boundary tolerance: ceil(0.008 x image diagonal) pixels."""
    return math.ceil(BOUNDARY_TOLERANCE * math.hypot(height, width))


def disk(radius: int) -> np.ndarray:
    """uint8 structuring element of the pixels within `radius` of the centre (x^2 + y^2 <= r^2)."""
    ys, xs = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return (xs * xs + ys * ys <= radius * radius).astype(np.uint8)


def boundary(mask: np.ndarray) -> np.ndarray:
    """Inner boundary: mask pixels with a 4-neighbour outside the mask. The image border is not a boundary
    (erosion pads with foreground), as in DAVIS, so a mask cut by the frame edge has no edge there."""
    mask = mask.astype(np.uint8)
    return (mask - cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3)))).astype(bool)


def f_measure(pred: np.ndarray, gt: np.ndarray, tolerance_px: int | None = None) -> float:
    """Boundary F of one mask pair: boundary pixels count as matched within `tolerance_px` (a disk) of the
    other boundary; F = 2PR / (P + R). The tolerance defaults to the DAVIS one for the mask size."""
    if tolerance_px is None:
        tolerance_px = boundary_tolerance_px(*gt.shape)
    pred_edge, gt_edge = boundary(pred), boundary(gt)
    pred_count, gt_count = pred_edge.sum(), gt_edge.sum()
    if pred_count == 0 and gt_count == 0:
        return 1.0
    if pred_count == 0 or gt_count == 0:
        return 0.0
    kernel = disk(tolerance_px)
    near_gt = cv2.dilate(gt_edge.astype(np.uint8), kernel).astype(bool)
    near_pred = cv2.dilate(pred_edge.astype(np.uint8), kernel).astype(bool)
    precision = (pred_edge & near_gt).sum() / pred_count
    recall = (gt_edge & near_pred).sum() / gt_count
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))


@dataclass(frozen=True)
class JFScore:
    """Mean J, mean F and J&F = (J + F) / 2 over `count` sequences (or frames, for one sequence)."""

    j: float
    f: float
    count: int

    @property
    def jf(self) -> float:
        return (self.j + self.f) / 2


def jf_sequence(preds: np.ndarray, gts: np.ndarray) -> JFScore:
    """J&F of one sequence: (T, H, W) predicted and ground-truth masks, every frame counted."""
    js = [iou(p, g) for p, g in zip(preds, gts, strict=True)]
    fs = [f_measure(p, g) for p, g in zip(preds, gts, strict=True)]
    return JFScore(j=float(np.mean(js)), f=float(np.mean(fs)), count=len(js))


def _accumulated(preds: np.ndarray, gts: np.ndarray) -> IoUAccumulator:
    accumulator = IoUAccumulator()
    for pred, gt in zip(preds, gts, strict=True):
        accumulator.add(pred, gt)
    return accumulator


def ciou(preds: np.ndarray, gts: np.ndarray) -> float:
    """Cumulative IoU over a data set: total intersection / total union (1.0 if every union is empty)."""
    return _accumulated(preds, gts).ciou


def giou(preds: np.ndarray, gts: np.ndarray) -> float:
    """Generalised IoU: mean of per-sample IoU (an empty union counts as 1)."""
    return _accumulated(preds, gts).giou


@dataclass
class IoUAccumulator:
    """Streams samples (image masks) and reports cIoU and gIoU over everything added."""

    intersection: int = 0
    union: int = 0
    iou_sum: float = 0.0
    count: int = 0

    def add(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Add one sample."""
        inter, union = int(np.logical_and(pred, gt).sum()), int(np.logical_or(pred, gt).sum())
        self.intersection += inter
        self.union += union
        self.iou_sum += 1.0 if union == 0 else inter / union
        self.count += 1

    @property
    def ciou(self) -> float:
        return 1.0 if self.union == 0 else self.intersection / self.union

    @property
    def giou(self) -> float:
        return self.iou_sum / self.count if self.count else float("nan")


@dataclass
class _Sequence:
    kind: str
    j_sum: float = 0.0
    f_sum: float = 0.0
    frames: int = 0


@dataclass
class JFAccumulator:
    """Streams frames of many expressions: J&F per expression (mean J and mean F over its frames), then the
    mean over expressions, per expression kind and over all of them."""

    sequences: dict[str, _Sequence] = field(default_factory=dict)

    def add_frame(self, expression_id: str, kind: str, pred: np.ndarray, gt: np.ndarray) -> None:
        """Score one frame of expression `expression_id` (of kind `kind`, e.g. "referring/motion")."""
        sequence = self.sequences.setdefault(expression_id, _Sequence(kind))
        if sequence.kind != kind:
            raise ValueError(f"expression {expression_id!r} was added as kind {sequence.kind!r}, not {kind!r}")
        sequence.j_sum += iou(pred, gt)
        sequence.f_sum += f_measure(pred, gt)
        sequence.frames += 1

    def scores(self) -> dict[str, JFScore]:
        """JFScore per kind, plus ALL_KINDS over every expression; each expression weighs the same."""
        per_kind: dict[str, list[_Sequence]] = defaultdict(list)
        for sequence in self.sequences.values():
            per_kind[sequence.kind].append(sequence)
            per_kind[ALL_KINDS].append(sequence)
        return {kind: JFScore(j=float(np.mean([s.j_sum / s.frames for s in group])),
                              f=float(np.mean([s.f_sum / s.frames for s in group])), count=len(group))
                for kind, group in per_kind.items()}


@dataclass
class _ClassTally:
    iou_sum: float = 0.0
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def pq(self) -> float:
        return self.iou_sum / (self.tp + self.fp / 2 + self.fn / 2)


def _flatten(masks: np.ndarray) -> np.ndarray:
    """(K, H, W) bool -> (K, H*W) float64, also for K = 0 (exact pixel counts through a matrix product)."""
    return masks.reshape(masks.shape[0], int(np.prod(masks.shape[1:]))).astype(np.float64)


@dataclass
class PanopticAccumulator:
    """Panoptic quality over images: per class, segments matched one-to-one at IoU > 0.5;
    PQ_c = sum IoU(TP) / (TP + FP/2 + FN/2); PQ = mean over classes present in ground truth or prediction."""

    tallies: dict[str, _ClassTally] = field(default_factory=lambda: defaultdict(_ClassTally))

    def add(self, pred_masks: np.ndarray, pred_classes: list[str], gt_masks: np.ndarray,
            gt_classes: list[str]) -> None:
        """Add one image: (K, H, W) predicted and (M, H, W) ground-truth segments (K or M may be 0) with their
        class names.
        Segments should not overlap; if predictions do, each gets at most one match, best IoU first."""
        pred_flat, gt_flat = _flatten(pred_masks), _flatten(gt_masks)
        inter = pred_flat @ gt_flat.T
        union = pred_flat.sum(1)[:, None] + gt_flat.sum(1)[None, :] - inter
        same = np.array([[p == g for g in gt_classes] for p in pred_classes], dtype=bool).reshape(inter.shape)
        ious = np.where(same & (union > 0), inter / np.maximum(union, 1), 0.0)
        pred_matched, gt_matched = set(), set()
        for p, g in zip(*np.unravel_index(np.argsort(-ious, axis=None, kind="stable"), ious.shape)):
            if ious[p, g] <= MATCH_IOU:
                break
            if p in pred_matched or g in gt_matched:
                continue
            pred_matched.add(p)
            gt_matched.add(g)
            tally = self.tallies[gt_classes[g]]
            tally.tp += 1
            tally.iou_sum += float(ious[p, g])
        for p, name in enumerate(pred_classes):
            self.tallies[name].fp += p not in pred_matched
        for g, name in enumerate(gt_classes):
            self.tallies[name].fn += g not in gt_matched

    def per_class(self) -> dict[str, float]:
        """PQ of every class seen so far."""
        return {name: tally.pq for name, tally in self.tallies.items()}

    @property
    def pq(self) -> float:
        """Mean PQ over classes (NaN before any segment)."""
        values = list(self.per_class().values())
        return float(np.mean(values)) if values else float("nan")


def panoptic_quality(pred_masks: np.ndarray, pred_classes: list[str], gt_masks: np.ndarray,
                     gt_classes: list[str]) -> float:
    """PQ of a single image (see PanopticAccumulator)."""
    accumulator = PanopticAccumulator()
    accumulator.add(pred_masks, pred_classes, gt_masks, gt_classes)
    return accumulator.pq


@dataclass
class SemanticAccumulator:
    """Confusion matrix over label maps (ints in [0, num_classes); `ignore` skipped) for mean IoU."""

    num_classes: int
    ignore: int = -1
    confusion: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def add(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Add one (H, W) predicted and ground-truth label map."""
        keep = gt != self.ignore
        index = gt[keep].astype(np.int64) * self.num_classes + pred[keep].astype(np.int64)
        self.confusion += np.bincount(index, minlength=self.num_classes ** 2).reshape(self.confusion.shape)

    @property
    def miou(self) -> float:
        """Mean IoU over classes present in ground truth or prediction."""
        inter = np.diag(self.confusion)
        union = self.confusion.sum(0) + self.confusion.sum(1) - inter
        return float(np.mean(inter[union > 0] / union[union > 0])) if (union > 0).any() else float("nan")
