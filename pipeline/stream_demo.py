"""`hyperseg-stream demo` (`make demo`): the whole streaming pipeline on this machine, two streams at once.

Starts a Kafka-compatible broker (embedded tansu; ``--bootstrap`` uses any Kafka instead), a local Ray with
the Serve app (``--mode split|fused``), the router, and ingest of two sources replayed in real time: by default
two clips of the synthetic world the shipped model knows, one with a referring expression and one with a class
list. Then it reads the masks topic back, writes an overlay MP4 per stream, prints a summary table and, as its
last line, the path of a summary JSON. Everything it started is stopped on exit, Ctrl-C and errors included.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import multiprocessing as mp
import os
import platform
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from operators.metrics import iou
from operators.prompt_spec import PromptSpec
from pipeline.broker import EmbeddedBroker
from pipeline.control import ControlOp, send_control
from pipeline.demo_clips import write_demo_clip
from pipeline.ingest import IngestSettings, StreamReport, run_ingest
from pipeline.records import RecordError
from pipeline.router import EMBEDDED_GROUP_OVERRIDES, RouterSettings, RouterThread, StreamCounters
from pipeline.sources import SourceSpec, parse_source
from pipeline.stream_backends import make_backend
from pipeline.subscribe import decode_objects, iter_mask_records, render_overlay, topic_frames
from pipeline.topics import TopicLayout, ensure_topics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoStream:
    """One stream of the demo: its source, its prompt and, for synthetic clips, the ground truth."""

    source: SourceSpec
    prompt: PromptSpec
    ground_truth: np.ndarray | None = None


def parse_prompt(text: str) -> PromptSpec:
    """``referring:the red car`` or ``classes:car,person`` -> PromptSpec."""
    kind, sep, value = text.partition(":")
    if not sep or not value.strip() or kind not in ("referring", "classes"):
        raise ValueError(f"a prompt looks like 'referring:EXPRESSION' or 'classes:A,B', got {text!r}")
    if kind == "referring":
        return PromptSpec(task="referring", text=value.strip())
    return PromptSpec(task="generic", classes=tuple(c.strip() for c in value.split(",") if c.strip()),
                      generic_mode="instance")


def default_streams(out_dir: Path, frames: int, fps: int) -> list[DemoStream]:
    """Two synthetic-world test clips: one referring expression, one class list."""
    streams = []
    for stream_id, seed, kind in (("clip-referring", 0, "referring"), ("clip-classes", 1, "classes")):
        clip = write_demo_clip(seed, kind, out_dir / "sources", frames, fps)
        spec = SourceSpec(stream_id, str(clip.path), realtime=True)
        streams.append(DemoStream(spec, clip.prompt, clip.ground_truth))
    return streams


def mean_iou(records: list[dict[str, Any]], ground_truth: np.ndarray) -> float:
    """Mean over frames of the IoU between the union of a record's masks and the prompt's ground truth."""
    scores = []
    for record in records:
        truth = ground_truth[record["frame_seq"]]
        masks = [obj.mask for obj in decode_objects(record)]
        predicted = np.logical_or.reduce(masks) if masks else np.zeros_like(truth)
        scores.append(iou(predicted, truth))
    return float(np.mean(scores)) if scores else 0.0


def stream_summary(
    stream: DemoStream, report: StreamReport | None, counters: StreamCounters | None, records: list[dict[str, Any]]
) -> dict[str, Any]:
    """Per-stream figures: frames in (ingest), masks out, dropped (at ingest or never masked), fps, latency."""
    frames_in = report.frames if report else 0
    latencies = [1000 * (r["publish_ts"] - r["capture_ts"]) for r in records]
    span = max(r["publish_ts"] for r in records) - min(r["capture_ts"] for r in records) if records else 0.0
    summary: dict[str, Any] = {
        "source": stream.source.url,
        "task": stream.prompt.task,
        "prompt": stream.prompt.text or ",".join(stream.prompt.classes),
        "frames_in": frames_in,
        "masks_out": len(records),
        "dropped": (report.dropped if report else 0) + max(frames_in - len(records), 0),
        "fps": len(records) / span if span > 0 else 0.0,
        "latency_p50_ms": float(np.percentile(latencies, 50)) if latencies else None,
        "latency_p95_ms": float(np.percentile(latencies, 95)) if latencies else None,
        "router": vars(counters) if counters else None,
    }
    if stream.ground_truth is not None:
        summary["mean_iou"] = mean_iou(records, stream.ground_truth)
    return summary


def print_table(streams: dict[str, dict[str, Any]]) -> None:
    header = f"{'stream':16s} {'frames in':>9s} {'masks out':>9s} {'dropped':>7s} {'fps':>6s} {'p50 ms':>7s} {'p95 ms':>7s} {'IoU':>5s}"
    print(header)
    print("-" * len(header))
    for stream_id, s in streams.items():
        p50 = "-" if s["latency_p50_ms"] is None else f"{s['latency_p50_ms']:.0f}"
        p95 = "-" if s["latency_p95_ms"] is None else f"{s['latency_p95_ms']:.0f}"
        score = f"{s['mean_iou']:.2f}" if "mean_iou" in s else "-"
        print(f"{stream_id:16s} {s['frames_in']:9d} {s['masks_out']:9d} {s['dropped']:7d} {s['fps']:6.1f} "
              f"{p50:>7s} {p95:>7s} {score:>5s}")


@contextlib.contextmanager
def broker_or(bootstrap: str | None) -> Iterator[str]:
    """The given Kafka, or an embedded tansu broker for the duration."""
    if bootstrap:
        yield bootstrap
        return
    with EmbeddedBroker() as broker:
        yield broker.bootstrap


def wait_for_masks(bootstrap: str, topic: str, expected: dict[str, int], timeout_s: float,
                   router: RouterThread) -> dict[str, list[dict[str, Any]]]:
    """Read masks until the router has settled every ingested frame and its masks were read, the router
    died, or ``timeout_s`` passed."""
    records: dict[str, list[dict[str, Any]]] = {s: [] for s in expected}
    stop = threading.Event()
    deadline = time.monotonic() + timeout_s

    def settled() -> bool:
        counters = router.router.stats
        return all(
            sid in counters
            and counters[sid].taken >= n
            and counters[sid].published + counters[sid].failed + counters[sid].skipped + counters[sid].dropped_lag
            >= counters[sid].taken
            and len(records[sid]) >= counters[sid].published
            for sid, n in expected.items()
        )

    def watch() -> None:
        while not stop.is_set() and time.monotonic() < deadline and router.is_alive() and not settled():
            time.sleep(0.2)
        stop.set()

    threading.Thread(target=watch, name="mask-watch", daemon=True).start()
    for record in iter_mask_records(bootstrap, topic, stop=stop):
        records.setdefault(record["stream_id"], []).append(record)
    return records


def run_demo(args: argparse.Namespace) -> Path:
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.source:
        if len(args.prompt or []) != len(args.source):
            raise ValueError("give one --prompt per --source, in the same order")
        streams = [DemoStream(parse_source(s, realtime=True), parse_prompt(p)) for s, p in zip(args.source, args.prompt)]
    else:
        streams = default_streams(out_dir, args.frames, args.fps)
    by_id = {s.source.stream_id: s for s in streams}
    layout = TopicLayout.prefixed(f"demo-{uuid.uuid4().hex[:8]}")
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        bootstrap = stack.enter_context(broker_or(args.bootstrap))
        ensure_topics(bootstrap, layout)
        print(f"broker {bootstrap}; topics {layout.frames}, {layout.masks}, {layout.control}", flush=True)
        backend = stack.enter_context(make_backend(args.no_ray, args.checkpoint, None, args.mode))
        print(f"{'in-process model' if args.no_ray else f'Ray + Serve app ({args.mode})'} ready after "
              f"{time.monotonic() - started:.0f}s", flush=True)
        send_control(bootstrap, [ControlOp("add-stream", sid, time.time(), prompt=s.prompt, source=s.source.url)
                                 for sid, s in by_id.items()], layout.control)
        settings = RouterSettings(bootstrap, layout, group_id=f"{layout.frames}-router", max_in_flight=4,
                                  consumer_overrides=dict(EMBEDDED_GROUP_OVERRIDES))
        router = RouterThread(settings, backend)
        router.start()
        stack.callback(router.join, 60)
        stack.callback(router.stop.set)
        if not router.router.ready.wait(60):
            raise RuntimeError("the router got no partition of the frames topic within 60 s")
        backend.wait_ready(list(by_id), timeout_s=120)  # like cameras already connected: start when warm
        print(f"router and stream actors ready after {time.monotonic() - started:.0f}s", flush=True)
        ingest_stop = mp.get_context("spawn").Event()  # crosses into the ingest processes
        stack.callback(ingest_stop.set)
        ingest_settings = IngestSettings(status_topic=layout.status, max_frames=args.frames)
        reports = run_ingest([s.source for s in streams], bootstrap, layout.frames, ingest_settings, ingest_stop)
        print(f"ingest done: {', '.join(f'{k} {r.frames} frames ({r.state})' for k, r in reports.items())}",
              flush=True)
        records = wait_for_masks(bootstrap, layout.masks, {k: r.frames for k, r in reports.items()},
                                 args.timeout, router)
        router.stop.set()
        router.join(60)
        if router.error is not None:
            raise RuntimeError(f"the router failed: {router.error}") from router.error
        overlays = {}
        for sid in by_id:  # frames from the frames topic: works for files and live cameras alike
            seqs = {r["frame_seq"] for r in records.get(sid, [])}
            video = out_dir / f"{sid}_overlay.mp4"
            frames = topic_frames(bootstrap, layout.frames, sid, seqs)
            overlays[sid] = str(video) if render_overlay(records.get(sid, []), frames, video, args.fps) else None
    summary = {sid: stream_summary(s, reports.get(sid), router.stats.get(sid), records.get(sid, []))
               | {"overlay": overlays[sid]} for sid, s in by_id.items()}
    print()
    print_table(summary)
    result = {
        "command": "hyperseg-stream demo " + " ".join(args.argv),
        "mode": "no-ray" if args.no_ray else args.mode,
        "source_fps": args.fps if not args.source else None,
        "wall_s": time.monotonic() - started,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end",
        "streams": summary,
    }
    with open(out_dir / "masks.jsonl", "w", encoding="utf-8") as saved:
        for record in (r for rs in records.values() for r in rs):
            saved.write(json.dumps(record, separators=(",", ":")) + "\n")
    path = out_dir / "summary.json"
    path.write_text(json.dumps(result, indent=2))
    return path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hyperseg-stream demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", help="an existing Kafka (default: start the embedded tansu broker)")
    parser.add_argument("--mode", choices=["split", "fused"], default="fused", help="Serve app layout")
    parser.add_argument("--no-ray", action="store_true", help="run the model in this process instead of Ray")
    parser.add_argument("--frames", type=int, default=36, help="frames per stream")
    parser.add_argument("--fps", type=int, default=3, help="frame rate of the synthetic clips (replayed live)")
    parser.add_argument("--source", action="append", metavar="ID=URL", help="your own source (repeatable)")
    parser.add_argument("--prompt", action="append", metavar="referring:TEXT|classes:A,B", help="one per --source")
    parser.add_argument("--checkpoint", help="model directory (default: the shipped model)")
    parser.add_argument("--timeout", type=float, default=300, help="give up waiting for masks after this long")
    parser.add_argument("--out", default="out/stream-demo")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        path = run_demo(args)
    except (ValueError, RecordError) as exc:
        print(f"hyperseg-stream demo: {exc}")
        return 2
    except KeyboardInterrupt:
        print("hyperseg-stream demo: interrupted; the broker, Ray, the router and ingest were stopped")
        return 130
    print(path)
    return 0
