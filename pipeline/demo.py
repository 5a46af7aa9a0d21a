"""`hyperseg-stream demo-model`: run HyperSeg frame by frame on a clip of the synthetic world and write an overlay MP4.

The model alone, no broker or Ray (`hyperseg-stream demo` is the streaming demo). Without `--checkpoint` it runs
the shipped synthetic-world model (models/weights/synthetic-tiny).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from models.checkpoint import load_default_model
from models.prompts import TaskPrompt
from models.video_predictor import HyperSegVideoPredictor
from operators.metrics import JFAccumulator
from operators.overlay import Mp4Writer, draw_overlay
from operators.synthetic import WorldConfig, make_clip


def _referring_prompt(clip) -> tuple[TaskPrompt, int]:
    for prompt in clip.prompts:
        if prompt.kind == "referring":
            return TaskPrompt("referring", text=prompt.text), prompt.targets[0]
    raise RuntimeError(f"clip {clip.seed} has no referring prompt")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="hyperseg-stream demo-model", description=__doc__)
    parser.add_argument("--checkpoint", help="a hyperseg-stream checkpoint directory (default: the shipped model)")
    parser.add_argument("--seed", type=int, default=0, help="which test-split clip of the synthetic world")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--out", default="out/demo", help="output directory")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    model, model_id = load_default_model(args.checkpoint)
    predictor = HyperSegVideoPredictor(model)
    clip = make_clip(args.seed, "test", WorldConfig(num_frames=args.frames))
    prompt, target = _referring_prompt(clip)

    out_dir = Path(args.out)
    video_path = out_dir / f"clip{args.seed}_overlay.mp4"
    scores = JFAccumulator()
    latencies: list[float] = []
    state = None
    with Mp4Writer(video_path, fps=10) as writer:
        for index, frame in enumerate(clip.frames):
            start = time.perf_counter()
            result, state = predictor.step(frame, prompt, state)
            latencies.append(time.perf_counter() - start)
            masks = result.masks.numpy()
            scores.add_frame("demo", "referring", masks[0], clip.masks[index, target])
            writer.write(draw_overlay(frame, masks, [f"{s:.2f}" for s in result.scores.tolist()], [0]))

    jf = scores.scores()["all"]
    summary = {
        "model": model_id,
        "prompt": prompt.text,
        "frames": len(latencies),
        "fps": len(latencies) / sum(latencies),
        "latency_p50_ms": 1000 * float(np.percentile(latencies, 50)),
        "latency_p95_ms": 1000 * float(np.percentile(latencies, 95)),
        "referring_jf": jf.jf,
        "video": str(video_path),
    }
    summary_path = out_dir / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2))
    print(f"{summary['frames']} frames of '{prompt.text}' at {summary['fps']:.1f} fps "
          f"(p50 {summary['latency_p50_ms']:.0f} ms, p95 {summary['latency_p95_ms']:.0f} ms); "
          f"J&F {jf.jf:.3f}")
    print(f"overlay video: {video_path}")
    print(summary_path)
    return 0
