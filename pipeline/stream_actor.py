"""The per-stream actor: a StreamProcessor whose results leave as validated mask records (plain dicts).

`StreamWorker` is the plain class (usable in-process: `--no-ray` runs); `StreamActor` is the same class as a Ray
actor, created by `pipeline.stream_registry.StreamRegistry`, one named actor per stream. Its methods:

    process(frame: FrameInput) -> dict      mask record (pipeline/schemas/mask_record.schema.json)
    set_prompt(spec: PromptSpec | dict) -> str   prompt_id; applies from the next frame, resets the prompt's state
    checkpoint() -> bytes                   StreamProcessor.checkpoint(): restore it with `restore=`
    last_seq() -> int | None                last processed frame (skip redelivered frames at or below it)
    stats() -> dict                         frames, gaps, last_seq, prompt_id

Errors a frame can raise (the state is unchanged after each): operators.stream_processor.SequenceError (stale or
redelivered seq), NoPromptError, operators.frame_codec.FrameDecodeError (garbled payload),
operators.prompt_spec.PromptError (prompt does not fit the frame). Through Ray they arrive wrapped in a
`ray.exceptions.RayTaskError` that is also an instance of the original class.

The stages come from a picklable factory so the actor builds them where it runs: `LocalStagesFactory` (the model in
the actor's process) or `pipeline.serve.serve_stages.ServeStagesFactory` (handles to the Serve app).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from monitoring import metrics
from operators.frame_codec import FrameDecodeError
from operators.local_stages import LocalStages
from operators.prompt_spec import PromptError, PromptSpec
from operators.stream_processor import FrameInput, ProcessedFrame, SequenceError, Stages, StreamProcessor
from pipeline.records import build_mask_record, mask_object

StagesFactory = Callable[[], Stages]


@dataclass(frozen=True)
class LocalStagesFactory:
    """Builds the model inside the process that calls it (each actor then holds its own copy)."""

    checkpoint: str | None = None
    adapters_dir: str | None = None
    num_threads: int = 1

    def __call__(self) -> Stages:
        import torch

        torch.set_num_threads(self.num_threads)
        return LocalStages.from_checkpoint(self.checkpoint, Path(self.adapters_dir) if self.adapters_dir else None)


def to_mask_record(out: ProcessedFrame) -> dict[str, Any]:
    """A processed frame -> the schema-validated mask record (masks as COCO RLE)."""
    objects = [mask_object(mask, score, track_id, label)
               for mask, score, track_id, label in zip(out.masks, out.scores, out.track_ids, out.labels)]
    return build_mask_record(stream_id=out.stream_id, frame_seq=out.seq, capture_ts=out.capture_ts, task=out.task,
                             prompt_id=out.prompt_id, model_id=out.model_id, width=out.width, height=out.height,
                             objects=objects)


_ERROR_KINDS = ((SequenceError, "sequence"), (FrameDecodeError, "decode"), (PromptError, "prompt"))


class StreamWorker:
    def __init__(self, stream_id: str, stages_factory: StagesFactory, prompt: PromptSpec | dict | None = None,
                 key_frame_interval: int = 1, restore: bytes | None = None) -> None:
        stages = stages_factory()
        if restore is not None:
            self.processor = StreamProcessor.restore(restore, stages)
            if self.processor.stream_id != stream_id:
                raise ValueError(f"checkpoint belongs to stream {self.processor.stream_id!r}, not {stream_id!r}")
            if prompt is not None:
                self.processor.set_prompt(prompt)
        else:
            spec = PromptSpec.from_dict(prompt) if isinstance(prompt, dict) else prompt
            self.processor = StreamProcessor(stream_id, stages, stages.model_id, spec, key_frame_interval)

    def process(self, frame: FrameInput) -> dict[str, Any]:
        stream_id = self.processor.stream_id
        try:
            out = self.processor.process(frame)
        except Exception as exc:
            kind = next((name for cls, name in _ERROR_KINDS if isinstance(exc, cls)), type(exc).__name__)
            metrics.frame_failed(stream_id, kind)
            raise
        started = time.perf_counter()
        record = to_mask_record(out)
        metrics.observe_stage("rle", time.perf_counter() - started)
        metrics.observe_stage("frame", out.latency_s)
        metrics.frame_processed(stream_id, out.gap)
        return record

    def set_prompt(self, spec: PromptSpec | dict) -> str:
        return self.processor.set_prompt(spec).prompt_id

    def checkpoint(self) -> bytes:
        return self.processor.checkpoint()

    def last_seq(self) -> int | None:
        return self.processor.last_seq

    def stats(self) -> dict[str, Any]:
        p = self.processor
        prompt = p.pending_prompt or p.prompt
        return {"stream_id": p.stream_id, "frames": p.frames, "gaps": p.gaps, "last_seq": p.last_seq,
                "prompt_id": prompt.prompt_id if prompt else None}


StreamActor = ray.remote(StreamWorker)
