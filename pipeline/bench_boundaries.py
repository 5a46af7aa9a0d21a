"""`hyperseg-stream bench-boundaries`: what crosses each process boundary per frame (bytes, dtype), split vs fused,
what each stage costs, and what a lower-precision transport of the encoder features does to the masks.

It runs the very objects the Serve deployments exchange (pipeline/serve/*: EncodedFrame in the transport dtype,
VLLMCall / VLLMResult, the predictor's inputs and FrameResult, the fused FrameRequest / StreamState) in this
process and measures their serialised size (pickle protocol 5, what Ray's serializer stores), so the figures do
not depend on a running cluster. Latencies are wall times of each stage on this machine, median over frames, at
batch sizes 1 and 4 (streams batched by @serve.batch). The encoder-feature sizes are also given for the
HyperSeg-3B preset from its config (validated against the measured model's shapes). Writes a Markdown table into
docs/streaming.md between the bench markers and a JSON next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.build import build_hyperseg_3b
from models.config import HyperSegConfig
from models.hyperseg import HyperSeg
from models.presets import preset_config
from models.stage_parts import STAGE_PARTS, parameter_count, stage_parameter_count
from models.video_predictor import (
    FrameRequest,
    HyperSegVideoPredictor,
    apply_vllm,
    finish_frame,
    followed,
    pool_prompts,
    start_state,
    vllm_call,
)
from operators.frame_codec import encode_jpeg
from operators.local_stages import LocalStages, decode_payload
from operators.prompt_spec import PromptSpec
from operators.stream_processor import FrameInput, ProcessedFrame
from operators.synthetic import WorldConfig, make_clip
from pipeline.serve.encode import cast_encoded, stack_encoded
from pipeline.serve.replica import TRANSPORT_DTYPES, pack_result
from pipeline.stream_actor import to_mask_record

START, END = "<!-- bench-boundaries:start -->", "<!-- bench-boundaries:end -->"
PROMPTS = {
    "referring": PromptSpec(task="referring", text="the small green triangle"),
    "generic": PromptSpec(task="generic", classes=("circle", "square", "triangle"), generic_mode="instance"),
}


@dataclass
class Crossing:
    mode: str
    boundary: str
    when: str  # every frame | key frames
    bytes: int
    contents: str


def wire_bytes(obj: Any) -> int:
    return len(pickle.dumps(obj, protocol=5))


def describe(obj: Any) -> str:
    """Tensors/arrays in an object as 'name dtype shape' (what dominates its bytes)."""
    found: list[str] = []

    def walk(value: Any, name: str) -> None:
        if isinstance(value, (torch.Tensor, np.ndarray)):
            if value.size if isinstance(value, np.ndarray) else value.numel():
                found.append(f"{name} {str(value.dtype).replace('torch.', '')} {tuple(value.shape)}")
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{name}.{k}" if name else str(k))
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(v, f"{name}[{i}]")
        elif hasattr(value, "__dataclass_fields__"):
            for k in value.__dataclass_fields__:
                walk(getattr(value, k), f"{name}.{k}" if name else k)

    walk(obj, "")
    return "; ".join(found) if found else "bytes / scalars"


def encoder_feature_values(cfg: HyperSegConfig) -> tuple[int, int]:
    """(vision-token values, pyramid values) per frame, from the config: res2..res5 at strides 4..32."""
    side = cfg.pyramid.image_size
    pyramid = sum(c * (side // (4 * 2**i)) ** 2 for i, c in enumerate(cfg.pyramid.channels))
    return cfg.vision.num_tokens * cfg.language.hidden_size, pyramid


def replica_parameters(model: HyperSeg) -> dict[str, int]:
    """Parameters each replica holds: split stages keep only their parts (models/stage_parts.py), fused all."""
    held = {stage: stage_parameter_count(model, stage) for stage in STAGE_PARTS}
    return {**held, "fused": parameter_count(model)}


def timed(fn: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def measure_crossings(predictor: HyperSegVideoPredictor, frames: list[np.ndarray], jpegs: list[bytes],
                      prompt: PromptSpec, transport: torch.dtype) -> list[Crossing]:
    """Crossings of the second frame of a stream (steady state: the stream carries latents and a prompt ring)."""
    cfg = predictor.cfg
    frame, jpeg = frames[1], jpegs[1]
    task_prompt = prompt.to_task_prompt(frame.shape[:2], cfg.visual_prompt)
    _, previous = predictor.step(frames[0], task_prompt, None)
    request = FrameRequest(frame, task_prompt, previous)
    state = start_state(request, "cpu")
    encoded = cast_encoded(predictor.model.encode([torch.from_numpy(frame)]), 0, transport)
    call = vllm_call(task_prompt, state, cfg)
    batch = stack_encoded([encoded], predictor.model.device)
    result = predictor.vllm_batch(batch.image_tokens, batch.pyramid, [call])[0]
    apply_vllm(state, result)
    pooled = pool_prompts(state, cfg)
    size = frame.shape[:2]
    follow = followed(state, task_prompt, cfg)
    masks, instance = predictor.predict_batch(batch.pyramid, [state.queries], [pooled], [task_prompt], [size],
                                              [follow])[0]
    finish_frame(cfg, masks, instance, task_prompt, state)
    record = to_mask_record(_processed(masks, prompt, size))
    fused_in = FrameRequest(None, task_prompt, previous)  # the frame travels Decode -> Fused on its own
    fused_out = predictor.step(frame, task_prompt, previous)
    rows = [
        ("both", "Kafka -> stream actor -> Decode (JPEG payload)", "every frame", jpeg),
        ("split", "Decode -> Encode (object store)", "every frame", frame),
        ("split", "Encode -> VLLM (object store)", "key frames", encoded),
        ("split", "Encode -> Predictor (object store)", "every frame", encoded),
        ("split", "stream actor -> VLLM (prompt, carried latents)", "key frames", call),
        ("split", "VLLM -> stream actor (E_Q, E_P, next latents)", "key frames", result),
        ("split", "stream actor -> Predictor (E_Q, pooled E_P, previous masks)", "every frame",
         (state.queries, pooled, task_prompt, size, follow)),
        ("split", "Predictor -> stream actor (bit-packed masks, instance embeddings)", "every frame",
         (pack_result(masks), instance)),
        ("fused", "Decode -> Fused (object store)", "every frame", frame),
        ("fused", "stream actor -> Fused (prompt, state)", "every frame", fused_in),
        ("fused", "Fused -> stream actor (bit-packed masks, state)", "every frame",
         (pack_result(fused_out[0]), fused_out[1])),
        ("both", "stream actor -> Kafka (mask record JSON)", "every frame",
         json.dumps(record, separators=(",", ":")).encode()),
    ]
    return [Crossing(mode, boundary, when, wire_bytes(obj), describe(obj)) for mode, boundary, when, obj in rows]


def _processed(result: Any, prompt: PromptSpec, size: tuple[int, int]) -> ProcessedFrame:
    return ProcessedFrame(stream_id="bench", seq=0, capture_ts=0.0, task=prompt.task, prompt_id=prompt.prompt_id,
                          model_id="bench", width=size[1], height=size[0], masks=result.masks.numpy(),
                          scores=result.scores.tolist(), labels=result.labels, track_ids=result.track_ids,
                          key_frame=True, gap=0)


def measure_latency(stages: LocalStages, frames: list[np.ndarray], jpegs: list[bytes], batch: int,
                    transport: torch.dtype) -> dict[str, float]:
    """Median ms per batch of `batch` streams for each stage."""
    predictor, cfg = stages.predictor, stages.config
    prompt = PROMPTS["referring"].to_task_prompt(frames[0].shape[:2], cfg.visual_prompt)
    times: dict[str, list[float]] = {k: [] for k in ("decode", "encode", "vllm", "predictor", "rle", "fused")}
    states = [None] * batch
    for index, (frame, jpeg) in enumerate(zip(frames, jpegs)):
        _, t = timed(lambda: [decode_payload(jpeg, "jpeg") for _ in range(batch)])
        times["decode"].append(t)
        requests = [FrameRequest(frame, prompt, s) for s in states]
        run_states = [start_state(r, "cpu") for r in requests]
        encoded, t = timed(lambda: predictor.model.encode([torch.from_numpy(frame)] * batch))
        times["encode"].append(t)
        parts = [cast_encoded(encoded, b, transport) for b in range(batch)]
        stacked = stack_encoded(parts, predictor.model.device)
        results, t = timed(lambda: predictor.vllm_batch(stacked.image_tokens, stacked.pyramid,
                                                        [vllm_call(prompt, s, cfg) for s in run_states]))
        times["vllm"].append(t)
        for s, r in zip(run_states, results):
            apply_vllm(s, r)
        pooled = [pool_prompts(s, cfg) for s in run_states]
        follow = [followed(s, prompt, cfg) for s in run_states]
        outs, t = timed(lambda: predictor.predict_batch(stacked.pyramid, [s.queries for s in run_states], pooled,
                                                        [prompt] * batch, [frame.shape[:2]] * batch, follow))
        times["predictor"].append(t)
        _, t = timed(lambda: [to_mask_record(_processed(o[0], PROMPTS["referring"], frame.shape[:2]))
                              for o in outs])
        times["rle"].append(t)
        fused, t = timed(lambda: stages.run_batch(requests, "default"))
        times["fused"].append(t)
        states = [state for _, state in fused]
        if index == 0:  # warm-up frame
            for values in times.values():
                values.clear()
    return {k: 1000 * statistics.median(v) for k, v in times.items()}


def transport_agreement(predictor: HyperSegVideoPredictor, frames: list[np.ndarray],
                        dtype: torch.dtype) -> dict[str, float]:
    """Masks with encoder features sent in `dtype` vs float32: mean / min IoU per object, score drift."""
    cfg = predictor.cfg
    ious, drift = [], []
    for prompt_spec in PROMPTS.values():
        prompt = prompt_spec.to_task_prompt(frames[0].shape[:2], cfg.visual_prompt)
        states: dict[str, Any] = {"float32": None, "low": None}
        for frame in frames:
            encoded = predictor.model.encode([torch.from_numpy(frame)])
            outs = {}
            for name, transport in (("float32", torch.float32), ("low", dtype)):
                state = start_state(FrameRequest(frame, prompt, states[name]), "cpu")
                batch = stack_encoded([cast_encoded(encoded, 0, transport)], predictor.model.device)
                apply_vllm(state, predictor.vllm_batch(batch.image_tokens, batch.pyramid,
                                                       [vllm_call(prompt, state, cfg)])[0])
                result, instance = predictor.predict_batch(batch.pyramid, [state.queries],
                                                           [pool_prompts(state, cfg)], [prompt],
                                                           [frame.shape[:2]],
                                                           [followed(state, prompt, cfg)])[0]
                finish_frame(cfg, result, instance, prompt, state)
                states[name], outs[name] = state, result
            ref, low = outs["float32"], outs["low"]
            for a, b in zip(ref.masks, low.masks):
                union = (a | b).sum().item()
                ious.append(1.0 if union == 0 else (a & b).sum().item() / union)
            if len(ref.scores) == len(low.scores) and len(ref.scores):
                drift.append((ref.scores - low.scores).abs().max().item())
    return {"mean_iou": float(np.mean(ious)), "min_iou": float(np.min(ious)),
            "max_score_drift": float(max(drift) if drift else 0.0), "objects": len(ious)}


def measure_serve(jpegs: list[bytes], args: argparse.Namespace, streams: int = 4) -> dict[str, dict[str, float]]:
    """Through a local Ray: per-frame latency of one stream as the router sees it (actor + all hops), and the
    frames/s of `streams` concurrent streams (deployments batching across them), for each mode."""
    import ray
    from ray import serve

    from pipeline.serve.app import build_app
    from pipeline.serve.serve_stages import ServeStagesFactory
    from pipeline.serve.settings import AppArgs
    from pipeline.stream_registry import RegistryConfig, StreamRegistry

    repo = str(Path(__file__).resolve().parents[1])
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": repo, "OMP_NUM_THREADS": "1"}})
    results = {}
    try:
        for mode in ("split", "fused"):
            app = f"bench-{mode}"
            serve.run(build_app(AppArgs(mode=mode, checkpoint=args.checkpoint, transport_dtype=args.transport)),
                      name=app, route_prefix=None)
            registry = StreamRegistry(ServeStagesFactory(app), config=RegistryConfig(namespace=app))
            actors = [registry.get(f"s{i}", create_with=PROMPTS["referring"]) for i in range(streams)]
            inputs = [FrameInput(seq, 0.0, "jpeg", jpeg) for seq, jpeg in enumerate(jpegs)]
            ray.get([a.process.remote(inputs[0]) for a in actors])  # warm-up: handles, first batch
            latency = []
            for frame in inputs[1:]:
                started = time.perf_counter()
                ray.get(actors[0].process.remote(frame))
                latency.append(time.perf_counter() - started)
            for i in range(streams):
                registry.remove(f"s{i}")
            actors = [registry.get(f"t{i}", create_with=PROMPTS["referring"]) for i in range(streams)]
            ray.get([a.process.remote(inputs[0]) for a in actors])
            started = time.perf_counter()
            ray.get([a.process.remote(frame) for frame in inputs[1:] for a in actors])
            fps = streams * (len(inputs) - 1) / (time.perf_counter() - started)
            for i in range(streams):
                registry.remove(f"t{i}")
            serve.delete(app)
            results[mode] = {"p50_ms": 1000 * float(np.percentile(latency, 50)),
                             "p95_ms": 1000 * float(np.percentile(latency, 95)), "fps": fps, "streams": streams}
    finally:
        serve.shutdown()
        ray.shutdown()
    return results


def markdown(report: dict[str, Any]) -> str:
    lines = [f"Measured by `{report['command']}` on {report['machine']} (model `{report['model_id']}`, "
             f"{report['frame_size']} frames, transport {report['transport']}).", "",
             "**Bytes crossing each boundary per frame** (serialised size, as Ray stores it):", "",
             "| mode | boundary | when | bytes | tensors |", "|---|---|---|---:|---|"]
    for c in report["crossings"]:
        lines.append(f"| {c['mode']} | {c['boundary']} | {c['when']} | {c['bytes']:,} | {c['contents']} |")
    lines += ["", "**Encoder features per frame** (the dominant crossing, split mode only), from the configs:", "",
              "| model | vision tokens | pyramid values | float32 | float16 / bfloat16 |", "|---|---:|---:|---:|---:|"]
    for name, (tokens, pyramid) in report["encoder_values"].items():
        total = tokens + pyramid
        lines.append(f"| {name} | {tokens:,} | {pyramid:,} | {4 * total / 1e6:.2f} MB | {2 * total / 1e6:.2f} MB |")
    lines += ["", "**Parameters held per replica** (split replicas keep only their stage's parts):", "",
              "| model | Encode | VLLM | Predictor | Fused |", "|---|---:|---:|---:|---:|"]
    for name, p in report["replica_parameters"].items():
        millions = [f"{p[k] / 1e6:,.1f} M" for k in ("encode", "vllm", "predictor", "fused")]
        lines.append(f"| {name} | {' | '.join(millions)} |")
    lines += ["", "**Stage latency** (median ms per batch, batch = streams in one forward pass; split stages "
              "exclude transport):", "", "| batch | decode | encode | vllm | predictor | RLE + record | "
              "fused (all stages) |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for batch, t in report["latency_ms"].items():
        lines.append(f"| {batch} | {t['decode']:.1f} | {t['encode']:.1f} | {t['vllm']:.1f} | {t['predictor']:.1f} "
                     f"| {t['rle']:.1f} | {t['fused']:.1f} |")
    if report.get("serve"):
        lines += ["", "**Through Ray Serve** (local Ray on this machine; one stream's per-frame latency as the router "
                  "sees it, and the frames/s of concurrent streams):", "",
                  "| mode | p50 ms (1 stream) | p95 ms (1 stream) | streams | frames/s (all streams) |",
                  "|---|---:|---:|---:|---:|"]
        for mode, r in report["serve"].items():
            lines.append(f"| {mode} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['streams']} | {r['fps']:.1f} |")
    lines += ["", "**Transport dtype vs float32 encoder features** (referring + generic prompts, masks per object):",
              "", "| dtype | objects | mean IoU | min IoU | max score drift |", "|---|---:|---:|---:|---:|"]
    for dtype, a in report["transport_agreement"].items():
        lines.append(f"| {dtype} | {a['objects']} | {a['mean_iou']:.4f} | {a['min_iou']:.4f} | "
                     f"{a['max_score_drift']:.2e} |")
    return "\n".join(lines)


def write_doc(doc: Path, table: str) -> None:
    text = doc.read_text() if doc.exists() else f"{START}\n{END}\n"
    if START not in text or END not in text:
        raise ValueError(f"{doc} lacks the {START} / {END} markers the table goes between")
    head, rest = text.split(START, 1)
    doc.write_text(f"{head}{START}\n{table}\n{END}{rest.split(END, 1)[1]}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="hyperseg-stream bench-boundaries", description=__doc__)
    parser.add_argument("--checkpoint", help="model directory (default: the shipped model)")
    parser.add_argument("--frames", type=int, default=6, help="frames timed per batch size (+1 warm-up)")
    parser.add_argument("--transport", choices=sorted(TRANSPORT_DTYPES), default="float16")
    parser.add_argument("--skip-serve", action="store_true", help="skip the end-to-end runs on a local Ray")
    parser.add_argument("--doc", default="docs/streaming.md", help="Markdown file to write the table into")
    parser.add_argument("--json", default="out/bench_boundaries.json")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    torch.set_num_threads(1)
    stages = LocalStages.from_checkpoint(args.checkpoint)
    clip = make_clip(0, "test", WorldConfig(num_frames=args.frames + 1))
    frames = [np.ascontiguousarray(f) for f in clip.frames]
    jpegs = [encode_jpeg(f) for f in frames]
    transport = TRANSPORT_DTYPES[args.transport]

    tokens, pyramid = encoder_feature_values(stages.config)
    encoded = stages.predictor.model.encode([torch.from_numpy(frames[0])])
    measured = (encoded.image_tokens.numel(), sum(v.numel() for v in encoded.pyramid.values()))
    assert measured == (tokens, pyramid), f"config-derived sizes {tokens, pyramid} != measured {measured}"

    crossings = measure_crossings(stages.predictor, frames, jpegs, PROMPTS["referring"], transport)
    big = preset_config("hyperseg-3b")
    report = {
        "command": "hyperseg-stream bench-boundaries " + " ".join(argv),
        "machine": f"{platform.machine()} {torch.get_num_threads()} torch thread(s), "
                   f"{_cpu_count()}-core CPU VM, no GPU",
        "model_id": stages.model_id,
        "frame_size": f"{frames[0].shape[1]}x{frames[0].shape[0]}",
        "transport": args.transport,
        "crossings": [asdict(c) for c in crossings],
        "encoder_values": {stages.model_id: (tokens, pyramid),
                           f"hyperseg-3b ({big.pyramid.image_size}² pyramid input, {big.vision.num_tokens} vision "
                           f"tokens)": encoder_feature_values(big)},
        "replica_parameters": {stages.model_id: replica_parameters(stages.predictor.model),
                               "hyperseg-3b": replica_parameters(build_hyperseg_3b())},
        "latency_ms": {b: measure_latency(stages, frames, jpegs, b, transport) for b in (1, 4)},
        "transport_agreement": {name: transport_agreement(stages.predictor, frames, TRANSPORT_DTYPES[name])
                                for name in ("float16", "bfloat16")},
    }
    report["serve"] = None if args.skip_serve else measure_serve(jpegs, args)
    table = markdown(report)
    write_doc(Path(args.doc), table)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(table)
    print(out)
    return 0


def _cpu_count() -> int:
    return os.cpu_count() or 0
