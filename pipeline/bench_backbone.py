"""`hyperseg-stream bench-backbone`: the EfficientNet-Lite0 pyramid backbone as the model runs it (each batch norm
folded into its convolution, channels_last inside) against the reference pass (the convolution, then the batch-norm
module, in PyTorch's default layout: the pass before the fold), side by side in one process.

The backbone runs on every frame the encode stage sees and, frozen, on every frame of a training step, so its time
counts in both. Both passes use the ImageNet weights and the same frames; the report gives each pass's median time
per batch, their ratio and the largest difference between their pyramid maps. `--training-steps N` also times N
training steps of the shipped model on the shipped command's batches with each pass, the two alternating step by
step so that a change in the machine's speed during the run falls on both.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from contextlib import contextmanager, nullcontext
from typing import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from models.checkpoint import load_default_model
from models.efficientnet_lite import EfficientNetLite0Backbone, SamePadConv2d, imagenet_state_dict
from models.training import OptimConfig, Trainer
from operators.training_samples import batch_for_step
from pipeline.train import build_parser as train_parser
from pipeline.train import sample_config

# The data flags of the shipped model's training command (models/weights/synthetic-tiny/MODEL_CARD.md).
SHIPPED_TRAINING = ["--mix", "referring=0.3,reasoning=0.2,generic=0.25,visual=0.25", "--seed", "1"]


def reference_conv_bn(conv: SamePadConv2d, x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    """The convolution in the default (contiguous) layout, then the batch-norm module on its output."""
    return bn(F.conv2d(conv.pad(x.contiguous()), conv.weight, None, conv.stride, 0, conv.dilation, conv.groups))


@contextmanager
def reference_pass() -> Iterator[None]:
    """Every Lite0 convolution in this process runs the reference way while inside."""
    folded = SamePadConv2d.forward
    SamePadConv2d.forward = reference_conv_bn
    try:
        yield
    finally:
        SamePadConv2d.forward = folded


def median_ms(backbone: EfficientNetLite0Backbone, pixels: torch.Tensor, repeats: int) -> float:
    backbone(pixels)  # warm-up: the first call allocates and picks the convolution kernels
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        backbone(pixels)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def compare(backbone: EfficientNetLite0Backbone, batch: int, size: int, repeats: int) -> dict[str, float]:
    pixels = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(batch)) * 2 - 1
    with torch.no_grad():
        with reference_pass():
            reference_ms = median_ms(backbone, pixels, repeats)
            reference = backbone(pixels)
        folded_ms = median_ms(backbone, pixels, repeats)
        folded = backbone(pixels)
    return {
        "batch": batch,
        "reference_ms": round(reference_ms, 1),
        "folded_ms": round(folded_ms, 1),
        "reference_over_folded": round(reference_ms / folded_ms, 2),
        "max_abs_difference": max((a - b).abs().max().item() for a, b in zip(folded, reference)),
        "max_abs_reference": max(r.abs().max().item() for r in reference),
    }


def training_steps(steps: int) -> dict[str, float]:
    """Median seconds per training step with each pass: the shipped weights, its command's batches from step 0."""
    args = train_parser().parse_args(SHIPPED_TRAINING)
    samples = sample_config(args)
    model, _ = load_default_model()
    trainer = Trainer(model, OptimConfig(steps=2 * steps, lr=args.lr, warmup_steps=0))  # each batch runs twice
    times: dict[str, list[float]] = {"reference": [], "folded": []}
    for step in range(steps):
        batch = batch_for_step(samples, args.seed, step)
        for name in ("reference", "folded") if step % 2 == 0 else ("folded", "reference"):
            with reference_pass() if name == "reference" else nullcontext():
                start = time.perf_counter()
                trainer.train_step(batch)
                times[name].append(time.perf_counter() - start)
    reference_s, folded_s = statistics.median(times["reference"]), statistics.median(times["folded"])
    return {"steps": steps, "reference_s": round(reference_s, 3), "folded_s": round(folded_s, 3),
            "reference_over_folded": round(reference_s / folded_s, 2)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="hyperseg-stream bench-backbone", description=__doc__)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8],
                        help="frames per pass (1: a stream's frame in serving; 8: a training step's image batch)")
    parser.add_argument("--size", type=int, default=256, help="frame side (the shipped model's pyramid input)")
    parser.add_argument("--repeats", type=int, default=20, help="timed passes per batch size (+1 warm-up)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--training-steps", type=int, default=0,
                        help="also time this many training steps with each pass (0: none)")
    args = parser.parse_args(argv)
    if min(args.batches) < 1 or args.size < 32 or args.repeats < 1 or args.threads < 1 or args.training_steps < 0:
        parser.error("--batches and --repeats must be >= 1, --size >= 32, --threads >= 1, --training-steps >= 0")

    torch.set_num_threads(args.threads)
    backbone = EfficientNetLite0Backbone()
    backbone.load_state_dict(imagenet_state_dict())
    backbone.eval()
    report = {
        "command": " ".join(["hyperseg-stream bench-backbone", *argv]),
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, {args.threads} torch thread(s)",
        "size": args.size,
        "results": [compare(backbone, batch, args.size, args.repeats) for batch in args.batches],
    }
    if args.training_steps:
        report["training_step"] = training_steps(args.training_steps)
    print(json.dumps(report, indent=2))
    return 0
