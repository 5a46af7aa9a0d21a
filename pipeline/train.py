"""`hyperseg-stream train`: train HyperSeg on the synthetic world (images and short clips, tasks mixed by ratio).

Writes `<out>/latest/` (a loadable checkpoint plus optimiser/schedule/RNG state) every `--checkpoint-every-s`
seconds and at the end, `<out>/step-N/` after each step N of `--keep-steps` (for a learning curve), and
`<out>/log.jsonl` (one line of loss parts per logged step). `--resume <out>/latest` continues a run exactly where it
stopped: the log keeps each step once and `elapsed_s` counts the training time of all its parts. Uses the GPU when
there is one (`--device auto`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import PreTrainedTokenizerFast

from models.build import build_hyperseg
from models.checkpoint import LoadReport, load_checkpoint, read_config
from models.config import HyperSegConfig
from models.hyperseg import HyperSeg
from models.presets import PRESETS, preset_config
from models.sequence import literal_text
from models.tokenizer import fit_bpe_tokenizer
from models.training import TRAIN_CONFIG_FILE, OptimConfig, StepResult, Trainer, pick_device
from operators.synthetic import WorldConfig, split_texts
from operators.training_samples import SampleConfig, TaskMix, attribute_classes, batch_for_step
from pipeline.training_plot import SHORT_NAMES

LATEST = "latest"
LOG_FILE = "log.jsonl"
# Training clips whose text a fitted tokenizer is fitted on (~40 ms each): enough to see every seen word many times.
TOKENIZER_CLIPS = 500
# The help of every flag that changes the model or its loss: a resumed run keeps the config it was started with.
NEW_RUNS_ONLY = "; new runs only: --resume keeps the run's own config"


def parse_mix(text: str) -> TaskMix:
    """"referring=0.35,reasoning=0.2,generic=0.2,visual=0.25" (omitted kinds keep their default)."""
    values: dict[str, float] = {}
    for item in filter(None, text.split(",")):
        name, _, value = item.partition("=")
        if name not in TaskMix.__dataclass_fields__ or not value:
            raise argparse.ArgumentTypeError(f"bad task mix item {item!r}; expected kind=weight with kind in "
                                             f"{sorted(TaskMix.__dataclass_fields__)}")
        values[name] = float(value)
    return replace(TaskMix(), **values)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hyperseg-stream train", description=__doc__)
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    parser.add_argument("--out", default="out/train", help="run directory")
    parser.add_argument("--resume", help="a run's checkpoint directory (e.g. out/train/latest) to continue")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--lr", type=float, default=4e-4)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--warmup-steps", type=int, default=100)
    parser.add_argument("--grad-clip", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto (GPU if any), cpu, cuda, cuda:1, ...")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--mix", type=parse_mix, default=TaskMix(), help="task shares, e.g. referring=0.4,visual=0.3")
    parser.add_argument("--image-batch", type=int, default=8, help="samples per image batch")
    parser.add_argument("--clip-batch", type=int, default=3, help="samples per clip batch")
    parser.add_argument("--clip-frames", type=int, default=3, help="frames per clip sample")
    parser.add_argument("--clip-share", type=float, default=0.5, help="share of steps that train on clips")
    parser.add_argument("--frame-size", type=int, default=256, help="side of the synthetic frames, px")
    parser.add_argument("--no-referring-negatives", action="store_true",
                        help="referring targets hold only the referent, as for the models before the shipped one "
                             "(default: every visible object, the others as negatives for the refer score)")
    parser.add_argument("--jpeg-share", type=float, default=0.0,
                        help="codec augmentation: share of samples whose frames go through a JPEG round trip, as a "
                             "stream's frames do at ingest (default 0: rendered pixels only)")
    parser.add_argument("--jpeg-qualities", type=int, nargs=2, default=(50, 95), metavar=("LOW", "HIGH"),
                        help="the JPEG quality of an augmented sample is drawn from LOW..HIGH (default 50 95)")
    parser.add_argument("--freeze-encoders", action="store_true",
                        help="keep the preset's frozen parts (tiny-lite0: its ImageNet pyramid backbone); default: train "
                             "everything (tiny has no pretrained part)")
    parser.add_argument("--refer-rank-weight", type=float,
                        help="weight of the top-1 ranking CE on the refer score (default: the preset's; 0 = off)"
                             + NEW_RUNS_ONLY)
    parser.add_argument("--refer-anchor-weight", type=float, default=0.0,
                        help="weight of a 2-way CE that the referent's refer score beats that of the object its "
                             "expression names beside it (\"the star\" of \"the same colour as the star\"; default "
                             "0: off)" + NEW_RUNS_ONLY)
    parser.add_argument("--attribute-weight", type=float, default=0.0,
                        help="weight of an auxiliary CE that makes each matched query predict its object's colour, "
                             "shape, size and texture (adds the attribute head; default 0: no head)" + NEW_RUNS_ONLY)
    parser.add_argument("--kinematics-weight", type=float, default=0.0,
                        help="weight of an auxiliary L1 that makes each matched query predict its object's centre and "
                             "velocity (adds the kinematics head; default 0: no head)" + NEW_RUNS_ONLY)
    parser.add_argument("--relation-layers", type=int, default=0,
                        help="self-attention layers over the queries, each with its mask geometry, and the prompt "
                             "before the refer score (default 0: the paper's dot product)" + NEW_RUNS_ONLY)
    parser.add_argument("--refer-attribute-match", action="store_true",
                        help="add the attributes' agreement between each query and the prompt (both read by the "
                             "attribute head) to the refer logit; needs --attribute-weight" + NEW_RUNS_ONLY)
    parser.add_argument("--attribute-match-weight", type=float,
                        help="weight of that agreement in the refer logit while training (default: the preset's, 1); "
                             "config.json keeps it, so inference uses it too unless changed there; needs "
                             "--refer-attribute-match" + NEW_RUNS_ONLY)
    parser.add_argument("--prompt-attribute-weight", type=float, default=0.0,
                        help="weight of an auxiliary CE that makes E_P of a referring or reasoning sample predict its "
                             "referent's attributes through the attribute head; needs --refer-attribute-match"
                             + NEW_RUNS_ONLY)
    parser.add_argument("--prompt-attribute-named-only", action="store_true",
                        help="ask that CE only for the attributes the expression names, in its target phrase or "
                             "through its anchor; needs --prompt-attribute-weight" + NEW_RUNS_ONLY)
    parser.add_argument("--motion-weight", type=float, default=0.0,
                        help="weight of an auxiliary CE that makes a head on E_P of a referring or reasoning sample "
                             "say how its referent moves (adds the motion head, whose term the refer logit adds at "
                             "inference, models/motion.py; default 0: no head)" + NEW_RUNS_ONLY)
    parser.add_argument("--init", metavar="CHECKPOINT",
                        help="start a new run from this checkpoint's weights and config (the preset and the flags that "
                             "shape the model are not read; --motion-weight and --train-only are)")
    parser.add_argument("--train-only", nargs="+", default=[], metavar="PREFIX",
                        help="train only the parameters under these prefixes, e.g. predictor.motion_head with --init"
                             + NEW_RUNS_ONLY)
    parser.add_argument("--lora-only", action="store_true",
                        help="train only LoRA in the LLM (default: the base LLM too; tiny has no pretraining)")
    parser.add_argument("--checkpoint-every-s", type=float, default=300.0)
    parser.add_argument("--keep-steps", type=int, nargs="+", default=[], metavar="N",
                        help="also keep the checkpoint after each of these steps, as <out>/step-N/")
    parser.add_argument("--log-every", type=int, default=10)
    return parser


def run_config(args: argparse.Namespace) -> HyperSegConfig:
    """The preset with the command line's choices of what trains and how the loss is weighted."""
    cfg = preset_config(args.preset)
    if not args.freeze_encoders:
        cfg.frozen = ()
    cfg.language.train_base = not args.lora_only
    if args.refer_rank_weight is not None:
        cfg.loss = replace(cfg.loss, refer_rank_weight=args.refer_rank_weight)
    if args.refer_anchor_weight:
        cfg.loss = replace(cfg.loss, refer_anchor_weight=args.refer_anchor_weight)
    if args.attribute_weight:
        cfg.loss = replace(cfg.loss, attribute_weight=args.attribute_weight)
        cfg.predictor = replace(cfg.predictor, attribute_classes=attribute_classes())
    if args.refer_attribute_match:
        if not args.attribute_weight:
            raise ValueError("--refer-attribute-match needs the attribute head: give --attribute-weight too")
        cfg.predictor = replace(cfg.predictor, refer_attribute_match=True)
    if args.attribute_match_weight is not None:
        if not args.refer_attribute_match:
            raise ValueError("--attribute-match-weight needs --refer-attribute-match")
        cfg.predictor = replace(cfg.predictor, attribute_match_weight=args.attribute_match_weight)
    if args.prompt_attribute_weight:
        if not args.refer_attribute_match:
            raise ValueError("--prompt-attribute-weight needs --refer-attribute-match")
        cfg.loss = replace(cfg.loss, prompt_attribute_weight=args.prompt_attribute_weight)
    if args.prompt_attribute_named_only:
        if not args.prompt_attribute_weight:
            raise ValueError("--prompt-attribute-named-only needs --prompt-attribute-weight")
        cfg.loss = replace(cfg.loss, prompt_attribute_named_only=True)
    if args.kinematics_weight:
        cfg.loss = replace(cfg.loss, kinematics_weight=args.kinematics_weight)
        cfg.predictor = replace(cfg.predictor, kinematics_head=True)
    if args.relation_layers < 0:
        raise ValueError(f"--relation-layers must be 0 or more, got {args.relation_layers}")
    cfg.predictor = replace(cfg.predictor, relation_layers=args.relation_layers)
    return with_motion_and_scope(cfg, args)


def with_motion_and_scope(cfg: HyperSegConfig, args: argparse.Namespace) -> HyperSegConfig:
    """`cfg` with the motion head and loss (--motion-weight) and what trains (--train-only); the two flags that
    also apply to an --init run."""
    if args.motion_weight:
        cfg.loss = replace(cfg.loss, motion_weight=args.motion_weight)
        cfg.predictor = replace(cfg.predictor, motion_head=True)
    cfg.trained_only = tuple(args.train_only)
    return cfg


def initial_model(args: argparse.Namespace, device: str) -> HyperSeg:
    """--init: the checkpoint's model with this command's motion head and scope; only parameters that train may be
    missing from the checkpoint (a new head), so nothing frozen is left at random."""
    cfg = with_motion_and_scope(read_config(args.init), args)
    model, report = load_checkpoint(args.init, device=device, strict=False, cfg=cfg)
    trained = {name for name, param in model.named_parameters() if param.requires_grad}
    gaps = LoadReport(missing=[name for name in report.missing if name not in trained],
                      unexpected=report.unexpected, mismatched=report.mismatched)
    if not gaps.complete:
        raise ValueError(f"--init {args.init}: the checkpoint does not fit this run's model beyond new heads that "
                         f"train:\n{gaps.summary()}")
    return model


def sample_config(args: argparse.Namespace) -> SampleConfig:
    """What the run trains on: the task mix, the world's frame size, batch shapes and augmentation."""
    return SampleConfig(mix=args.mix, world=WorldConfig(height=args.frame_size, width=args.frame_size),
                        clip_frames=args.clip_frames, clip_batch_share=args.clip_share,
                        image_batch_size=args.image_batch, clip_batch_size=args.clip_batch,
                        referring_negatives=not args.no_referring_negatives, jpeg_share=args.jpeg_share,
                        jpeg_qualities=tuple(args.jpeg_qualities))


def _save_latest(trainer: Trainer, out: Path, extra: dict) -> None:
    """Write the checkpoint beside the old one, then swap, so a crash never leaves a half-written `latest`."""
    staging = out / f"{LATEST}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    trainer.save(staging, extra)
    shutil.rmtree(out / LATEST, ignore_errors=True)
    staging.rename(out / LATEST)


class _StopRequest:
    """SIGTERM / SIGINT end the run after the current step, with a checkpoint, instead of losing the progress since
    the last one."""

    def __init__(self) -> None:
        self.requested = False
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, self._request)

    def _request(self, number: int, frame: object) -> None:
        self.requested = True


def _logged_step(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (json.JSONDecodeError, KeyError, TypeError):
        return None  # a line cut short when the run was killed


def _continue_log(log_path: Path, step: int) -> None:
    """Drop the lines of steps at or after `step`: a run stopped after its last checkpoint had logged steps that the
    resumed run takes again, and the log should hold each step once."""
    if log_path.exists():
        lines = log_path.read_text().splitlines(keepends=True)
        kept = [line for line in lines if (logged := _logged_step(line)) is not None and logged < step]
        log_path.write_text("".join(line if line.endswith("\n") else line + "\n" for line in kept))


def fitted_tokenizer(cfg: HyperSegConfig, world: WorldConfig) -> PreTrainedTokenizerFast:
    """A BPE fitted on what the model will read: its templates (once per clip, as often as a model reads them) and the
    training split's expressions and class names (never the held-out ones, which stay spelt from pieces)."""
    texts = literal_text(cfg.language.template) * TOKENIZER_CLIPS + split_texts("train", TOKENIZER_CLIPS, world)
    return fit_bpe_tokenizer(texts, int(cfg.language.hf_config["vocab_size"]))


def _bar_text(result: StepResult, samples_per_s: float) -> dict[str, str]:
    text = {SHORT_NAMES[name]: f"{value:.3f}" for name, value in result.losses.items() if name in SHORT_NAMES}
    text["lr"] = f"{result.lr:.1e}"
    text["samples/s"] = f"{samples_per_s:.2f}"
    return text


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.resume and args.init:
        build_parser().error("--resume continues a run and --init starts a new one from a checkpoint: give one")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    optim = OptimConfig(steps=args.steps, lr=args.lr, weight_decay=args.weight_decay, warmup_steps=args.warmup_steps,
                        grad_clip=args.grad_clip, seed=args.seed)
    samples = sample_config(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.resume:
        trainer = Trainer.resume(args.resume, optim, device=device)
    elif args.init:
        trainer = Trainer(initial_model(args, device), optim)
    else:
        cfg = run_config(args)
        tokenizer = fitted_tokenizer(cfg, samples.world) if cfg.language.tokenizer == "fitted" else None
        torch.manual_seed(args.seed)
        model = build_hyperseg(cfg, device=device, tokenizer=tokenizer)
        if cfg.pyramid.pretrained_backbone:
            model.pyramid.load_pretrained_backbone()
        trainer = Trainer(model, optim)
    extra = {"samples": json.loads(json.dumps(asdict(samples))), "command": ["hyperseg-stream", "train", *argv],
             "device": device}
    earlier_s = 0.0  # `elapsed_s` counts the run's training time over all its resumes
    if args.resume:
        earlier = json.loads((Path(args.resume) / TRAIN_CONFIG_FILE).read_text())
        earlier_s = float(earlier.get("elapsed_s", 0.0))
        extra["resumed_at_steps"] = [*earlier.get("resumed_at_steps", []), trainer.step_index]
    if late := [n for n in args.keep_steps if not trainer.step_index < n <= args.steps]:
        build_parser().error(f"--keep-steps {late} must lie after the run's first step ({trainer.step_index}) and at "
                             f"or before --steps ({args.steps})")
    if args.resume:
        _continue_log(out / LOG_FILE, trainer.step_index)
    print(f"training {trainer.model.trainable_parameters():,} parameters on {device} for {args.steps} steps "
          f"(from step {trainer.step_index}) -> {out}")

    started = last_save = time.monotonic()
    seen = 0
    stop = _StopRequest()
    with open(out / LOG_FILE, "a") as log, tqdm(total=args.steps, initial=trainer.step_index, unit="step") as bar:
        while trainer.step_index < args.steps and not stop.requested:
            step = trainer.step_index
            result = trainer.train_step(batch_for_step(samples, args.seed, step))
            seen += result.samples
            this_run_s = time.monotonic() - started
            bar.set_postfix(_bar_text(result, seen / this_run_s), refresh=False)
            elapsed = earlier_s + this_run_s
            bar.update(1)
            if trainer.step_index in args.keep_steps:
                trainer.save(out / f"step-{trainer.step_index}", {**extra, "elapsed_s": elapsed})
            if step % args.log_every == 0 or trainer.step_index == args.steps:
                log.write(json.dumps({"step": step, "elapsed_s": round(elapsed, 1), "lr": result.lr,
                                      "frames": result.frames, **result.losses}) + "\n")
                log.flush()
            if time.monotonic() - last_save >= args.checkpoint_every_s:
                _save_latest(trainer, out, {**extra, "elapsed_s": elapsed})
                last_save = time.monotonic()
    this_run_s = time.monotonic() - started
    _save_latest(trainer, out, {**extra, "elapsed_s": earlier_s + this_run_s})
    stopped = " (stopped on request; --resume continues it)" if stop.requested else ""
    in_all = f" ({(earlier_s + this_run_s) / 60:.1f} min in all)" if args.resume else ""
    print(f"done: {trainer.step_index} steps in {this_run_s / 60:.1f} min{in_all}{stopped}; checkpoint {out / LATEST}")
    return 0
