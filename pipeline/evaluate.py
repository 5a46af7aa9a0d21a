"""`hyperseg-stream eval`: J&F, gIoU/cIoU, PQ and mIoU of a checkpoint on the synthetic world's test split.

By default the shipped model (models/weights/synthetic-tiny) on the first 10 test clips. `--json` prints one JSON
object; `--ablation temporal keyframe choice` adds the temporal-adapter, VLLM key-frame and visual-prompt choice
tables (same clips, video tasks).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from models.checkpoint import load_default_model
from models.training import pick_device
from models.video_predictor import HyperSegVideoPredictor
from operators.evaluation import ABLATION_KINDS, TASKS, EvalConfig, ablations, evaluate
from operators.synthetic import WorldConfig

HEADLINE = ("referring_jf", "reasoning_jf", "vos_jf", "image_giou", "image_ciou", "panoptic_pq", "semantic_miou")
ORACLE = ("referring_oracle_jf", "reasoning_oracle_jf", "image_oracle_giou")  # with --referring-candidates > 1


# PredictorConfig fields that an eval flag of the same name (--object-score-threshold, ...) overrides when given,
# with what each does; every default is the checkpoint's value, and each is tuned on --split val.
PREDICTOR_OVERRIDES = {
    "object_score_threshold": "generic tasks: keep queries whose class probability exceeds this",
    "overlap_threshold": "panoptic: a query keeps its segment only if this share of its mask survives the per-pixel "
                         "competition",
    "continuity_power": "visual prompts: weight of the previous mask in the choice, 0 = off",
    "continuity_floor": "visual prompts: the continuity factor's floor, (floor + IoU) ** power",
    "absence_threshold": "visual prompts: an object whose chosen query scores below this gets an empty mask",
    "identity_power": "visual prompts: weight of each object's first-frame instance embedding in the choice, 0 = off",
    "referring_absence_threshold": "referring / reasoning: a candidate whose score (refer probability x mask "
                                   "quality) is below this gets an empty mask",
    "attribute_match_weight": "referring / reasoning: weight of the attribute agreement in the refer logit (needs "
                              "predictor.refer_attribute_match)",
    "motion_match_weight": "referring / reasoning: weight of the motion term in the refer logit (needs "
                           "predictor.motion_head)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hyperseg-stream eval", description=__doc__)
    parser.add_argument("--checkpoint", help="checkpoint directory (default: the shipped synthetic-tiny model)")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--clips", type=int, default=10, help="number of clips of the split")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=8, help="frames per clip")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--vllm-every", type=int, default=1, help="run the VLLM on every k-th frame only")
    parser.add_argument("--ablation", nargs="*", default=[], choices=ABLATION_KINDS,
                        help="also evaluate the temporal-adapter variants, VLLM key-frame intervals and/or the "
                             "visual-prompt choice with and without continuity and identity")
    for name, effect in PREDICTOR_OVERRIDES.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=float,
                            help=f"{effect} (default: the checkpoint's predictor.{name}); tune it on --split val")
    parser.add_argument("--referring-candidates", type=int,
                        help="referring / reasoning: return this many candidate masks, best first, and report the "
                             "oracle scores (the best candidate on each frame) beside the headline (the first); "
                             "default: the checkpoint's predictor.referring_candidates")
    parser.add_argument("--shared-visual-queries", action="store_true",
                        help="visual prompts: let several regions take the same query, each its own best (default: "
                             "the checkpoint's predictor.distinct_visual_queries, a joint assignment)")
    parser.add_argument("--jpeg-quality", type=int,
                        help="JPEG-code every frame at this quality first, as ingest does (default: raw pixels)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _fmt(value: object) -> str:
    return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, model_id = load_default_model(args.checkpoint, device=pick_device(args.device))
    if args.attribute_match_weight is not None and not model.cfg.predictor.refer_attribute_match:
        parser.error(f"--attribute-match-weight: {model_id} has no attribute match (predictor.refer_attribute_match "
                     "is false), so the weight would change nothing")
    if args.motion_match_weight is not None and not model.cfg.predictor.motion_head:
        parser.error(f"--motion-match-weight: {model_id} has no motion head (predictor.motion_head is false), so the "
                     "weight would change nothing")
    for name in PREDICTOR_OVERRIDES:
        if getattr(args, name) is not None:
            setattr(model.cfg.predictor, name, getattr(args, name))
    if args.referring_candidates is not None:
        model.cfg.predictor.referring_candidates = args.referring_candidates
    if args.shared_visual_queries:
        model.cfg.predictor.distinct_visual_queries = False
    predictor = HyperSegVideoPredictor(model)
    cfg = EvalConfig(split=args.split, clips=args.clips, first_seed=args.first_seed,
                     world=WorldConfig(num_frames=args.frames), tasks=tuple(args.tasks),
                     key_frame_interval=args.vllm_every, jpeg_quality=args.jpeg_quality)
    started = time.perf_counter()
    report: dict[str, object] = {"model": model_id,
                                 **{name: getattr(model.cfg.predictor, name) for name in PREDICTOR_OVERRIDES},
                                 "distinct_visual_queries": model.cfg.predictor.distinct_visual_queries,
                                 "referring_candidates": model.cfg.predictor.referring_candidates,
                                 **evaluate(predictor, cfg)}
    if args.ablation:
        report["ablations"] = ablations(predictor, cfg, tuple(args.ablation))
    report["eval_seconds"] = round(time.perf_counter() - started, 1)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{model_id} on {cfg.clips} {cfg.split} clips ({report['frames']} frames, {report['eval_seconds']} s):")
    for key in HEADLINE + tuple(k for k in ORACLE if k in report):
        print(f"  {key:20s} {_fmt(report[key])}")
    for kind, row in report["per_kind"].items():  # type: ignore[union-attr]
        score = row.get("jf", row.get("giou"))
        print(f"  {kind:28s} {_fmt(score)}  (n={row['count']})")
    for task, shares in report["language_picks"].items():  # type: ignore[union-attr]
        print(f"  {task} picks: " + "  ".join(f"{outcome} {share:.3f}" for outcome, share in shares.items()))
    for name, row in report.get("ablations", {}).items():  # type: ignore[union-attr]
        print(f"  {name:20s} " + "  ".join(f"{k} {_fmt(v)}" for k, v in row.items()))
    return 0
