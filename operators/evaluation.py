"""Evaluating a HyperSeg video predictor on the synthetic world: every task, per expression kind, and ablations.

Each clip is streamed frame by frame through `HyperSegVideoPredictor.step_batch`, all of its prompts side by side as
separate streams (each with its own temporal state), exactly as the pipeline runs them:
  referring / reasoning  J, F, J&F per expression (every frame; an invisible target counts as an empty mask)
  visual (VOS)           J, F, J&F per prompted object on the frames after the prompt frame (DAVIS semi-supervised)
  generic                panoptic PQ and semantic mIoU (background as a class) over every frame
  image                  gIoU / cIoU of the expressions one frame can answer, each on the frame that shows its target
                         best, from a fresh state (no temporal context)
`language_picks` says what the first referring / reasoning mask covered on each frame (`pick_outcome`), as shares
of the frames: whether a miss is the wrong object (the anchor the expression names, or another), an empty mask or a
mask where the referent is out of view; `language_picks_per_kind` says it per expression kind.
When the predictor returns several referring candidates (`PredictorConfig.referring_candidates` > 1), the headline
scores the first, and the oracle scores (as SAM's paper reports for its multimask output) the candidate with the
highest IoU against the ground truth on each frame: how good the choice could be among the masks the model makes.
Ablations switch the temporal adapter's parts and the VLLM key-frame interval on the same weights.
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np

from models.config import VisualPromptConfig
from models.postprocess import FrameResult
from models.video_predictor import FrameRequest, HyperSegVideoPredictor
from operators.metrics import (ALL_KINDS, IoUAccumulator, JFAccumulator, PanopticAccumulator, SemanticAccumulator,
                               iou)
from operators.synthetic import Clip, Prompt, WorldConfig, anchors, make_clip, novelty
from operators.training_samples import TEMPORAL_SUBKINDS, jpeg_coded, task_prompt

TASKS = ("referring", "reasoning", "visual", "generic", "image")
VIDEO_TASKS = ("referring", "reasoning", "visual")
# Generic modes with a metric here (instance mode shares the panoptic training and has no metric of its own).
SCORED_GENERIC_MODES = ("panoptic", "semantic")
# The temporal-adapter ablation: (global prompt aggregation, local latent injection).
TEMPORAL_VARIANTS: dict[str, tuple[bool, bool]] = {"both": (True, True), "global_only": (True, False),
                                                   "local_only": (False, True), "off": (False, False)}
KEY_FRAME_INTERVALS = (1, 2, 4, 8)


@dataclass(frozen=True)
class EvalConfig:
    split: str = "test"
    clips: int = 10
    first_seed: int = 0
    world: WorldConfig = field(default_factory=WorldConfig)
    tasks: tuple[str, ...] = TASKS
    key_frame_interval: int = 1  # run the VLLM on every k-th frame; the predictor runs on every frame
    visual: VisualPromptConfig = field(default_factory=VisualPromptConfig)
    # JPEG-code every frame at this quality before the model sees it, as ingest codes frames for the frames topic
    # (None: the rendered pixels). Measures what the compression a stream always has does to the picks.
    jpeg_quality: int | None = None

    def __post_init__(self) -> None:
        unknown = set(self.tasks) - set(TASKS)
        if unknown:
            raise ValueError(f"unknown eval tasks {sorted(unknown)}; choose from {TASKS}")
        if self.clips < 1 or self.key_frame_interval < 1:
            raise ValueError("clips and key_frame_interval must be >= 1")
        if self.jpeg_quality is not None and not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100 (or None), got {self.jpeg_quality}")


@dataclass
class _Tallies:
    """Everything accumulated over clips."""

    language: JFAccumulator = field(default_factory=JFAccumulator)  # kinds "referring/<subkind>", ...
    language_novelty: JFAccumulator = field(default_factory=JFAccumulator)  # kinds "seen" / "novel"
    language_oracle: JFAccumulator = field(default_factory=JFAccumulator)  # best candidate per frame (see module doc)
    # `pick_outcome`s per task ("referring") and per kind ("referring/spatial")
    picks: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    visual: JFAccumulator = field(default_factory=JFAccumulator)  # kinds "visual/<mode>"
    image: dict[str, IoUAccumulator] = field(default_factory=dict)  # "all" and per kind
    image_oracle: IoUAccumulator = field(default_factory=IoUAccumulator)
    panoptic: PanopticAccumulator = field(default_factory=PanopticAccumulator)
    semantic: SemanticAccumulator | None = None
    frames: int = 0
    seconds: float = 0.0


@dataclass
class _Stream:
    prompt: Prompt
    name: str
    anchors: tuple[int, ...] = ()  # referring / reasoning: the objects the expression's anchor describes


def _streams(clip: Clip, tasks: tuple[str, ...], world: WorldConfig) -> list[_Stream]:
    streams = []
    for i, prompt in enumerate(clip.prompts):
        if prompt.kind in ("referring", "reasoning") and prompt.kind in tasks:
            named = anchors(prompt.query, clip, world) if prompt.query is not None else ()
            streams.append(_Stream(prompt, f"{clip.seed}/{i}", named))
        elif prompt.kind == "visual" and "visual" in tasks:
            streams.append(_Stream(prompt, f"{clip.seed}/{i}"))
        elif prompt.kind == "generic" and "generic" in tasks and prompt.subkind in SCORED_GENERIC_MODES:
            streams.append(_Stream(prompt, f"{clip.seed}/{i}"))
    return streams


def _target_mask(clip: Clip, t: int, prompt: Prompt) -> np.ndarray:
    return clip.masks[t, list(prompt.targets)].any(axis=0)


def _oracle(masks: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """The candidate mask (of N, H, W) with the highest IoU against `gt` (the first on ties)."""
    return masks[int(np.argmax([iou(mask, gt) for mask in masks]))]


def pick_outcome(mask: np.ndarray, objects: np.ndarray, targets: tuple[int, ...], anchors: tuple[int, ...] = ()
                 ) -> str:
    """What a referring / reasoning pick (H, W) did on one frame, given every object's mask on it (N, H, W), the
    referent's indices and those of the anchor the expression names: with the referent in view, the pick covers the
    referent ("referent"; the object it overlaps most is one of `targets`), the anchor ("anchor"), another object
    ("other_object") or no object ("no_object"), or it is empty ("empty"); with the referent out of view, it is empty
    ("absent_empty", the right answer) or not ("absent_mask")."""
    if not objects[list(targets)].any():
        return "absent_mask" if mask.any() else "absent_empty"
    if not mask.any():
        return "empty"
    overlaps = (objects & mask).reshape(len(objects), -1).sum(1)
    if not overlaps.any():
        return "no_object"
    most = int(np.argmax(overlaps))
    return "referent" if most in targets else "anchor" if most in anchors else "other_object"


def _score_frame(tallies: _Tallies, clip: Clip, t: int, stream: _Stream, result: FrameResult) -> None:
    prompt, masks = stream.prompt, result.masks.cpu().numpy()
    kind = f"{prompt.kind}/{prompt.subkind}"
    if prompt.kind in ("referring", "reasoning"):
        gt = _target_mask(clip, t, prompt)
        tallies.language.add_frame(stream.name, kind, masks[0], gt)
        outcome = pick_outcome(masks[0], clip.masks[t], prompt.targets, stream.anchors)
        for key in (prompt.kind, kind):
            tallies.picks[key][outcome] += 1
        tallies.language_novelty.add_frame(stream.name, "novel" if novelty(prompt, clip) else "seen", masks[0], gt)
        if len(masks) > 1:
            tallies.language_oracle.add_frame(stream.name, kind, _oracle(masks, gt), gt)
    elif prompt.kind == "visual":
        if t == prompt.visual[0].frame:
            return  # the prompt frame itself is given, as in DAVIS semi-supervised evaluation
        mode = "mask_multi" if len(prompt.targets) > 1 else prompt.subkind
        for r, obj in enumerate(prompt.targets):
            tallies.visual.add_frame(f"{stream.name}/{obj}", f"visual/{mode}", masks[r], clip.masks[t, obj])
    elif prompt.subkind == "panoptic":
        present = [i for i in prompt.targets if clip.visible_px[t, i] > 0]
        tallies.panoptic.add(masks, list(result.labels), clip.masks[t, present],
                             [clip.objects[i].shape for i in present])
    else:
        _score_semantic(tallies, clip, t, prompt, result)


def _score_semantic(tallies: _Tallies, clip: Clip, t: int, prompt: Prompt, result: FrameResult) -> None:
    """mIoU over the listed classes plus background (index len(classes))."""
    background = len(prompt.classes)
    if tallies.semantic is None:
        tallies.semantic = SemanticAccumulator(num_classes=background + 1)
    gt = np.full(clip.masks.shape[2:], background, dtype=np.int64)
    for i in prompt.targets:
        gt[clip.masks[t, i]] = prompt.classes.index(clip.objects[i].shape)
    pred = result.semantic.cpu().numpy()
    tallies.semantic.add(np.where(pred < 0, background, pred), gt)


def _run_video(predictor: HyperSegVideoPredictor, clip: Clip, streams: list[_Stream], cfg: EvalConfig,
               tallies: _Tallies) -> None:
    prompts = [task_prompt(s.prompt, clip, cfg.visual) for s in streams]
    states = [None] * len(streams)
    for t, frame in enumerate(clip.frames):
        run_vllm = t % cfg.key_frame_interval == 0
        started = time.perf_counter()
        outputs = predictor.step_batch([FrameRequest(frame, p, s, run_vllm) for p, s in zip(prompts, states)])
        tallies.seconds += time.perf_counter() - started
        tallies.frames += 1
        for index, (stream, (result, state)) in enumerate(zip(streams, outputs)):
            states[index] = state
            _score_frame(tallies, clip, t, stream, result)


def _run_images(predictor: HyperSegVideoPredictor, clip: Clip, cfg: EvalConfig, tallies: _Tallies) -> None:
    """Single-frame referring/reasoning: each expression on the frame where its target shows most."""
    chosen = [p for p in clip.prompts if p.kind in ("referring", "reasoning") and p.subkind not in TEMPORAL_SUBKINDS]
    if not chosen:
        return
    frames = [int(clip.visible_px[:, list(p.targets)].sum(axis=1).argmax()) for p in chosen]
    requests = [FrameRequest(clip.frames[t], task_prompt(p, clip, cfg.visual)) for p, t in zip(chosen, frames)]
    outputs = predictor.step_batch(requests)
    for prompt, t, (result, _) in zip(chosen, frames, outputs):
        masks, gt = result.masks.cpu().numpy(), _target_mask(clip, t, prompt)
        for key in (ALL_KINDS, f"{prompt.kind}/{prompt.subkind}"):
            tallies.image.setdefault(key, IoUAccumulator()).add(masks[0], gt)
        if len(masks) > 1:
            tallies.image_oracle.add(_oracle(masks, gt), gt)


def _finite(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _jf_summary(accumulator: JFAccumulator) -> dict[str, dict[str, float]]:
    return {kind: {"j": s.j, "f": s.f, "jf": s.jf, "count": s.count} for kind, s in sorted(accumulator.scores().items())}


def _headline(per_kind: dict[str, dict[str, float]], prefix: str) -> dict[str, float] | None:
    """J, F and J&F over every expression whose kind starts with `prefix` (each expression weighs the same)."""
    rows = [(v["j"], v["f"], v["count"]) for k, v in per_kind.items() if k.startswith(prefix + "/")]
    count = sum(c for _, _, c in rows)
    if not count:
        return None
    j = sum(j * c for j, _, c in rows) / count
    f = sum(f * c for _, f, c in rows) / count
    return {"j": j, "f": f, "jf": (j + f) / 2, "count": count}


def _summary(tallies: _Tallies, cfg: EvalConfig) -> dict[str, object]:
    language = _jf_summary(tallies.language)
    visual = _jf_summary(tallies.visual)
    result: dict[str, object] = {"split": cfg.split, "clips": cfg.clips, "first_seed": cfg.first_seed,
                                 "key_frame_interval": cfg.key_frame_interval, "jpeg_quality": cfg.jpeg_quality}
    for name, per_kind, prefix in (("referring", language, "referring"), ("reasoning", language, "reasoning"),
                                   ("vos", visual, "visual")):
        head = _headline(per_kind, prefix)
        for part in ("jf", "j", "f"):
            result[f"{name}_{part}"] = head[part] if head else None
        result[f"{name}_count"] = head["count"] if head else 0
    image = tallies.image.get(ALL_KINDS)
    result["image_giou"] = _finite(image.giou) if image else None
    result["image_ciou"] = _finite(image.ciou) if image else None
    result["image_count"] = image.count if image else 0
    if tallies.language_oracle.sequences or tallies.image_oracle.count:
        oracle = _jf_summary(tallies.language_oracle)
        for name in ("referring", "reasoning"):
            head = _headline(oracle, name)
            result[f"{name}_oracle_jf"] = head["jf"] if head else None
        result["image_oracle_giou"] = _finite(tallies.image_oracle.giou) if tallies.image_oracle.count else None
    result["panoptic_pq"] = _finite(tallies.panoptic.pq) if tallies.panoptic.tallies else None
    result["semantic_miou"] = _finite(tallies.semantic.miou) if tallies.semantic else None
    result["per_kind"] = {**{k: v for k, v in language.items() if k != ALL_KINDS},
                          **{k: v for k, v in visual.items() if k != ALL_KINDS},
                          **{f"image/{k}": {"giou": acc.giou, "ciou": acc.ciou, "count": acc.count}
                             for k, acc in sorted(tallies.image.items()) if k != ALL_KINDS}}
    shares = {key: {outcome: n / sum(counts.values()) for outcome, n in sorted(counts.items())}
              for key, counts in sorted(tallies.picks.items())}
    result["language_picks"] = {key: row for key, row in shares.items() if "/" not in key}
    result["language_picks_per_kind"] = {key: row for key, row in shares.items() if "/" in key}
    result["novelty_jf"] = {k: v["jf"] for k, v in _jf_summary(tallies.language_novelty).items() if k != ALL_KINDS}
    result["panoptic_pq_per_class"] = dict(sorted(tallies.panoptic.per_class().items()))
    result["frames"] = tallies.frames
    result["video_fps"] = tallies.frames / tallies.seconds if tallies.seconds else None
    return result


def evaluate(predictor: HyperSegVideoPredictor, cfg: EvalConfig) -> dict[str, object]:
    """Metrics over clips first_seed .. first_seed + clips - 1 of the split (all on a 0..1 scale)."""
    tallies = _Tallies()
    for seed in range(cfg.first_seed, cfg.first_seed + cfg.clips):
        clip = make_clip(seed, cfg.split, cfg.world)
        if cfg.jpeg_quality is not None:
            clip = jpeg_coded(clip, cfg.jpeg_quality)
        streams = _streams(clip, cfg.tasks, cfg.world)
        if streams:
            _run_video(predictor, clip, streams, cfg, tallies)
        if "image" in cfg.tasks:
            _run_images(predictor, clip, cfg, tallies)
    return _summary(tallies, cfg)


@contextmanager
def overridden(config: object, **values: object) -> Iterator[None]:
    """Set fields of a (model) config for the duration of the block, restoring them after."""
    saved = {name: getattr(config, name) for name in values}
    for name, value in values.items():
        setattr(config, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(config, name, value)


ABLATION_METRICS = ("referring_jf", "reasoning_jf", "vos_jf", "video_fps")
ABLATION_KINDS = ("temporal", "keyframe", "choice")
# The visual-prompt choice ablation: what it follows besides appearance (continuity prior, first-frame identity).
CHOICE_VARIANTS: dict[str, tuple[bool, bool]] = {"continuity+identity": (True, True), "continuity": (True, False),
                                                 "identity": (False, True), "appearance": (False, False)}


def ablations(predictor: HyperSegVideoPredictor, cfg: EvalConfig, kinds: tuple[str, ...] = ABLATION_KINDS
              ) -> dict[str, dict[str, object]]:
    """Video metrics of each variant on the same clips: the temporal adapter's parts (with the VLLM on every
    frame), the VLLM key-frame interval (with the full temporal adapter), and the visual-prompt choice with and
    without following the previous mask and the first-frame identity (`PredictorConfig.continuity_power`,
    `identity_power`; VOS only)."""
    unknown = set(kinds) - set(ABLATION_KINDS)
    if unknown:
        raise ValueError(f"unknown ablation kinds {sorted(unknown)}; choose from {ABLATION_KINDS}")
    video = replace(cfg, tasks=VIDEO_TASKS, key_frame_interval=1)
    temporal, selection = predictor.cfg.temporal, predictor.cfg.predictor
    rows: dict[str, dict[str, object]] = {}
    if "temporal" in kinds:
        for name, (aggregate, inject) in TEMPORAL_VARIANTS.items():
            with overridden(temporal, aggregate_prompts=aggregate, inject_latents=inject):
                metrics = evaluate(predictor, video)
            rows[f"temporal={name}"] = {k: metrics[k] for k in ABLATION_METRICS}
    if "keyframe" in kinds:
        for k in KEY_FRAME_INTERVALS:
            with overridden(temporal, aggregate_prompts=True, inject_latents=True):
                metrics = evaluate(predictor, replace(video, key_frame_interval=k))
            rows[f"vllm_every={k}"] = {key: metrics[key] for key in ABLATION_METRICS}
    if "choice" in kinds:
        for name, (follow_mask, follow_identity) in CHOICE_VARIANTS.items():
            with overridden(selection, continuity_power=selection.continuity_power if follow_mask else 0.0,
                            identity_power=selection.identity_power if follow_identity else 0.0):
                metrics = evaluate(predictor, replace(video, tasks=("visual",)))
            rows[f"choice={name}"] = {key: metrics[key] for key in ABLATION_METRICS}
    return rows
