"""Predictor output -> per-frame results at the frame's full resolution, for each task."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from models.config import PredictorConfig
from models.mask_grid import on_grid, pairwise_iou
from models.motion import MotionTracks
from models.predictor import LayerPrediction
from models.prompts import TaskPrompt


@dataclass
class FrameResult:
    """Full-resolution binary masks (N, H, W) with a score, a label and a track id per object."""

    task: str
    masks: torch.Tensor
    scores: torch.Tensor
    labels: list[str | None]
    track_ids: list[int | None]
    query_indices: torch.Tensor  # which predictor query each object came from
    semantic: torch.Tensor | None = None  # (H, W) class index per pixel, -1 = none (semantic mode)
    # Referring / reasoning with the motion head: the objects the stream follows into the next frame (its state keeps
    # them, `video_predictor.finish_frame`)
    motion_tracks: MotionTracks | None = None
    entities: tuple[str, ...] = field(default_factory=tuple)  # names the LLM recognised (generic tasks)

    def __len__(self) -> int:
        return int(self.masks.shape[0])


def _upsample(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, h, w) mask logits -> (N, H, W) logits."""
    if logits.shape[0] == 0:
        return logits.new_zeros(0, *size)
    return nn.functional.interpolate(logits.unsqueeze(0).float(), size=size, mode="bilinear",
                                     align_corners=False)[0]


def mask_quality(mask_logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """Mean foreground probability inside each binarised mask (Q, h, w) -> (Q,); 0 for empty masks."""
    probs = mask_logits.sigmoid()
    binary = (probs > threshold).float()
    return (probs * binary).flatten(1).sum(-1) / binary.flatten(1).sum(-1).clamp(min=1.0)


def continuity(mask_logits: torch.Tensor, previous: torch.Tensor, cfg: PredictorConfig) -> torch.Tensor:
    """(Q, h, w) mask logits and the objects' masks on the previous frame (R, grid, grid) -> (Q, R) score factor
    (floor + soft IoU) ** power; 1 for an object whose previous mask is empty (nothing to follow).

    The IoU is soft: each query's mask probabilities, averaged per grid cell, against the binary previous mask. A
    query that covers the object with probabilities just under the mask threshold then still counts as following
    it; binarised, it would score 0 and lose to a confident look-alike elsewhere."""
    current = on_grid(mask_logits.sigmoid(), cfg.continuity_grid)
    factor = (cfg.continuity_floor + pairwise_iou(current, previous)) ** cfg.continuity_power
    return torch.where(previous.flatten(1).any(1), factor, torch.ones_like(factor))


def identity(instance: torch.Tensor, anchors: torch.Tensor, cfg: PredictorConfig) -> torch.Tensor:
    """(Q, E) instance embeddings and each object's unit embedding on the stream's first frame (R, E) -> (Q, R)
    score factor ((1 + cos) / 2) ** identity_power: near 1 for the prompted object's query, small for a look-alike
    that the instance head (trained to tell objects apart across frames) keeps apart from it."""
    cos = nn.functional.normalize(instance.float(), dim=-1) @ anchors.float().T
    return ((1 + cos) / 2).clamp(min=0) ** cfg.identity_power


@dataclass
class Followed:
    """What a visual-prompt stream's choice follows from earlier frames (`video_predictor.followed`)."""

    masks: torch.Tensor | None = None  # (R, grid, grid) bool: each object's previous mask (`continuity`)
    identity: torch.Tensor | None = None  # (R, E) unit: each object's instance embedding on the first frame
    # Referring / reasoning with the motion head: the objects followed so far (kept on the CPU) and this frame's index
    tracks: MotionTracks | None = None
    frame: int = 0

    def to(self, device: torch.device | str) -> "Followed":
        masks, identity = (None if t is None else t.to(device) for t in (self.masks, self.identity))
        return Followed(masks, identity, self.tracks, self.frame)


def distinct_queries(scores: torch.Tensor) -> torch.Tensor:
    """(Q, R) query-object scores, R <= Q -> (R,) one query per object, no query shared, maximising the product of
    the chosen scores (Hungarian assignment on -log score)."""
    cost = -scores.detach().float().clamp_min(torch.finfo(torch.float32).tiny).log().cpu().numpy()
    queries, objects = linear_sum_assignment(cost)
    return torch.as_tensor(queries[objects.argsort()], dtype=torch.long, device=scores.device)


def _result(task: str, logits: torch.Tensor, chosen: torch.Tensor, scores: torch.Tensor, labels: list[str | None],
            size: tuple[int, int], threshold: float) -> FrameResult:
    masks = _upsample(logits[chosen], size).sigmoid() > threshold
    return FrameResult(task=task, masks=masks, scores=scores, labels=labels, track_ids=[None] * len(labels),
                       query_indices=chosen)


def referring(pred: LayerPrediction, b: int, cfg: PredictorConfig, size: tuple[int, int], task: str,
              motion: torch.Tensor | None = None) -> FrameResult:
    """The `referring_candidates` queries with the highest sigmoid(referring logit [+ `motion`, the motion term
    (Q,)]) x mask quality, best first; a candidate scoring below `referring_absence_threshold` gets an empty mask (no
    referent in the frame)."""
    if cfg.referring_candidates < 1:
        raise ValueError(f"referring_candidates must be >= 1, got {cfg.referring_candidates}")
    logits = pred.masks[b]
    refer = pred.refer[b, :, 0] if motion is None else pred.refer[b, :, 0] + motion.to(pred.refer)
    score = refer.sigmoid() * mask_quality(logits, cfg.mask_threshold)
    best = score.topk(min(cfg.referring_candidates, score.numel())).indices
    result = _result(task, logits, best, score[best], [None] * len(best), size, cfg.mask_threshold)
    result.masks[score[best] < cfg.referring_absence_threshold] = False
    return result


def visual(pred: LayerPrediction, b: int, num_regions: int, cfg: PredictorConfig, size: tuple[int, int],
           followed: Followed | None = None, instance: torch.Tensor | None = None) -> FrameResult:
    """One mask per region: the query that scores highest for it, weighted by `continuity` with the region's
    object on the previous frame and by `identity` with its embedding on the first frame, for what `followed` holds
    (the latter needs this frame's instance embeddings (Q, E)). With `distinct_visual_queries`, several regions get
    different queries (one object per query, as the objects are distinct). A region whose score is below
    `absence_threshold` gets an empty mask (its object is taken as gone)."""
    logits = pred.masks[b]
    probs = pred.regions[b].softmax(-1)[:, :num_regions] * mask_quality(logits, cfg.mask_threshold)[:, None]
    if followed is not None and followed.masks is not None:
        probs = probs * continuity(logits, followed.masks, cfg)
    if followed is not None and followed.identity is not None:
        if instance is None:
            raise ValueError("following an identity needs the frame's instance embeddings")
        probs = probs * identity(instance, followed.identity, cfg)
    if cfg.distinct_visual_queries and 1 < num_regions <= probs.shape[0]:
        best = distinct_queries(probs)
    else:
        best = probs.argmax(dim=0)
    scores = probs[best, torch.arange(num_regions)]
    result = _result("visual", logits, best, scores, [f"region {r}" for r in range(num_regions)], size,
                     cfg.mask_threshold)
    result.masks[scores < cfg.absence_threshold] = False
    return result


def instances(pred: LayerPrediction, b: int, classes: tuple[str, ...], cfg: PredictorConfig,
              size: tuple[int, int], task: str) -> FrameResult:
    """Top-k (query, class) pairs by class probability x mask quality, above the object threshold."""
    logits = pred.masks[b]
    probs = pred.classes[b].softmax(-1)[:, : len(classes)]
    scores = probs * mask_quality(logits, cfg.mask_threshold)[:, None]
    top = scores.flatten().topk(min(cfg.max_instances, scores.numel()))
    keep = top.values > cfg.object_score_threshold
    flat = top.indices[keep]
    queries, labels = flat // len(classes), flat % len(classes)
    return _result(task, logits, queries, top.values[keep], [classes[i] for i in labels.tolist()], size,
                   cfg.mask_threshold)


def panoptic(pred: LayerPrediction, b: int, classes: tuple[str, ...], cfg: PredictorConfig,
             size: tuple[int, int]) -> FrameResult:
    """Mask2Former panoptic inference: confident queries compete per pixel; a query keeps a segment only if
    enough of its own mask survives (overlap threshold)."""
    logits = pred.masks[b]
    scores, labels = pred.classes[b].softmax(-1).max(-1)
    keep = (labels < len(classes)) & (scores > cfg.object_score_threshold)
    kept = keep.nonzero().flatten()
    probs = _upsample(logits[kept], size).sigmoid()
    owner = (scores[kept, None, None] * probs).argmax(0) if kept.numel() else None
    chosen, masks, seg_scores, names = [], [], [], []
    for i, query in enumerate(kept.tolist()):
        own = probs[i] > cfg.mask_threshold
        segment = (owner == i) & own
        if own.sum() == 0 or segment.sum() / own.sum() < cfg.overlap_threshold:
            continue
        chosen.append(query)
        masks.append(segment)
        seg_scores.append(scores[query])
        names.append(classes[int(labels[query])])
    return FrameResult(
        task="generic", masks=torch.stack(masks) if masks else torch.zeros(0, *size, dtype=torch.bool),
        scores=torch.stack(seg_scores) if seg_scores else torch.zeros(0), labels=names,
        track_ids=[None] * len(names), query_indices=torch.tensor(chosen, dtype=torch.long),
    )


def semantic(pred: LayerPrediction, b: int, classes: tuple[str, ...], cfg: PredictorConfig,
             size: tuple[int, int]) -> FrameResult:
    """Per-pixel class: sum over queries of class probability x mask probability; background where no class
    reaches the mask threshold. A region's score is its mean class probability, the mask-weighted average over the
    queries covering each pixel (the sum itself exceeds 1 where several queries cover a pixel)."""
    class_probs = pred.classes[b].softmax(-1)[:, : len(classes)]
    mask_probs = _upsample(pred.masks[b], size).sigmoid()
    per_class = torch.einsum("qc,qhw->chw", class_probs, mask_probs)
    best, index = per_class.max(0)
    index = torch.where(best > cfg.mask_threshold, index, torch.full_like(index, -1))
    present = [c for c in range(len(classes)) if bool((index == c).any())]
    masks = torch.stack([index == c for c in present]) if present else torch.zeros(0, *size, dtype=torch.bool)
    class_share = per_class / mask_probs.sum(0).clamp_min(torch.finfo(per_class.dtype).tiny)
    scores = torch.stack([class_share[c][index == c].mean() for c in present]) if present else torch.zeros(0)
    return FrameResult(task="generic", masks=masks, scores=scores, labels=[classes[c] for c in present],
                       track_ids=[None] * len(present), query_indices=torch.zeros(0, dtype=torch.long),
                       semantic=index)


def postprocess(pred: LayerPrediction, b: int, prompt: TaskPrompt, cfg: PredictorConfig,
                size: tuple[int, int], followed: Followed | None = None,
                instance: torch.Tensor | None = None, motion: torch.Tensor | None = None) -> FrameResult:
    """Dispatch on the task (and the generic mode); `followed` and `instance` are used by visual prompts, `motion`
    (the motion term of each query) by referring ones."""
    with torch.no_grad():
        if prompt.task in ("referring", "reasoning"):
            return referring(pred, b, cfg, size, prompt.task, motion)
        if prompt.task == "visual":
            return visual(pred, b, len(prompt.regions), cfg, size, followed, instance)
        if prompt.task == "vis":
            return instances(pred, b, prompt.classes, cfg, size, "vis")
        if prompt.generic_mode == "semantic":
            return semantic(pred, b, prompt.classes, cfg, size)
        if prompt.generic_mode == "instance":
            return instances(pred, b, prompt.classes, cfg, size, "generic")
        return panoptic(pred, b, prompt.classes, cfg, size)
