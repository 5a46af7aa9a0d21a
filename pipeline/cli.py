"""The `hyperseg-stream` command: one subcommand per job, each implemented in its own module."""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module, function(argv) -> exit code, help); imported lazily: Ray and torch load slowly
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "model-info": ("pipeline.model_info", "main", "parameter counts of a preset"),
    "demo": ("pipeline.stream_demo", "main", "the streaming demo: broker, Ray Serve, two streams, overlay videos"),
    "demo-model": ("pipeline.demo", "main", "run the model alone on a sample clip and write an overlay video"),
    "train": ("pipeline.train", "main", "train HyperSeg on the synthetic world (CPU or GPU)"),
    "eval": ("pipeline.evaluate", "main", "J&F / gIoU / PQ of a checkpoint on the synthetic test split"),
    "ingest": ("pipeline.ingest", "ingest_main", "read cameras/files/RTSP and publish frames to Kafka"),
    "run": ("pipeline.router", "run_main", "the worker: frames topic -> per-stream actors -> masks topic"),
    "control": ("pipeline.control", "control_main", "add/remove a stream, change its prompt or LoRA adapter"),
    "subscribe": ("pipeline.subscribe", "subscribe_main", "print/save mask records, render an overlay video"),
    "bench-boundaries": ("pipeline.bench_boundaries", "main", "bytes/dtype per Serve boundary, stage latency"),
    "bench-backbone": ("pipeline.bench_backbone", "main", "the Lite0 backbone pass: folded batch norm vs reference"),
}


def _usage() -> str:
    lines = ["usage: hyperseg-stream SUBCOMMAND [options]", "", "subcommands:"]
    lines += [f"  {name:12s} {help_text}" for name, (_, _, help_text) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if args[0] not in SUBCOMMANDS:
        print(f"hyperseg-stream: unknown subcommand {args[0]!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, function, _ = SUBCOMMANDS[args[0]]
    return int(getattr(importlib.import_module(module_name), function)(args[1:]))


if __name__ == "__main__":
    sys.exit(main())
