"""Where the router's per-stream work runs: Ray actors (the product) or this process (``--no-ray``).

Both keep one stream's calls in submission order (a Ray actor executes one caller's calls in order; the local
backend has one worker thread), which is what lets the router overlap streams without reordering any of them.
A ``set_prompt`` queued between two frames therefore applies from the second one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from operators.prompt_spec import PromptSpec
from operators.stream_processor import FrameInput, read_checkpoint
from pipeline.ray_runtime import ServeMode, ray_serve_app
from pipeline.records import FrameMeta
from pipeline.stream_actor import StreamWorker


def frame_input(payload: bytes, meta: FrameMeta) -> FrameInput:
    """A frames-topic record as the stream processor's input."""
    return FrameInput(seq=meta.seq, capture_ts=meta.capture_ts, codec=meta.codec, payload=payload,
                      keyframe=meta.keyframe)


def checkpoint_summary(checkpoint: bytes, prompt: PromptSpec) -> tuple[bool, int]:
    """(prompt changed, last processed seq or -1) of a checkpoint. The control table is the truth: a prompt
    changed while the stream moved between routers must win, and reset the old prompt's state."""
    header, _ = read_checkpoint(checkpoint)
    current = header["pending_prompt"] or header["prompt"]
    changed = current is None or PromptSpec.from_dict(current).prompt_id != prompt.prompt_id
    return changed, -1 if header["last_seq"] is None else int(header["last_seq"])


class StreamBackend(Protocol):
    """The per-stream operations the router needs."""

    def has(self, stream_id: str) -> bool:
        """Whether the stream has a live processor here."""

    def open(self, stream_id: str, prompt: PromptSpec, restore: bytes | None) -> int:
        """Create the stream's worker, from a checkpoint when given (the control table's prompt wins);
        returns the sequence number of the last frame it processed (-1: none)."""

    def set_prompt(self, stream_id: str, prompt: PromptSpec) -> None:
        """Queue a prompt change behind the frames already submitted."""

    def process(self, stream_id: str, payload: bytes, meta: FrameMeta) -> Future[dict[str, Any]]:
        """Submit a frame; the future yields its mask record (a dict valid against the schema)."""

    def checkpoint(self, stream_id: str) -> bytes:
        """The stream's checkpoint after the work submitted so far."""

    def release(self, stream_id: str) -> bytes | None:
        """Wait for the stream's work, drop its processor, return its checkpoint (None if it had none)."""

    def wait_ready(self, stream_ids: list[str], timeout_s: float) -> list[str]:
        """Block until these streams' workers answer; the ids that have none here."""

    def __enter__(self) -> StreamBackend: ...

    def __exit__(self, *exc: object) -> None: ...


class _WorkerBackend:
    """The backend operations in terms of three primitives: create a stream's worker, call one of its methods
    (in submission order, as a future), and remove it (returning its checkpoint)."""

    def __init__(self, key_frame_interval: int = 1) -> None:
        self.key_frame_interval = key_frame_interval
        self.handles: dict[str, Any] = {}

    def _create(self, stream_id: str, prompt: PromptSpec | None, restore: bytes | None) -> Any:
        raise NotImplementedError

    def _call(self, handle: Any, method: str, *args: Any) -> Future[Any]:
        raise NotImplementedError

    def _remove(self, stream_id: str, handle: Any) -> bytes | None:
        raise NotImplementedError

    def has(self, stream_id: str) -> bool:
        return stream_id in self.handles

    def open(self, stream_id: str, prompt: PromptSpec, restore: bytes | None) -> int:
        # A restored worker keeps its temporal state unless the prompt changed while the stream moved.
        changed, last_seq = checkpoint_summary(restore, prompt) if restore is not None else (True, -1)
        self.handles[stream_id] = self._create(stream_id, prompt if changed else None, restore)
        return last_seq

    def set_prompt(self, stream_id: str, prompt: PromptSpec) -> None:
        self._call(self.handles[stream_id], "set_prompt", prompt)

    def process(self, stream_id: str, payload: bytes, meta: FrameMeta) -> Future[dict[str, Any]]:
        return self._call(self.handles[stream_id], "process", frame_input(payload, meta))

    def checkpoint(self, stream_id: str) -> bytes:
        return self._call(self.handles[stream_id], "checkpoint").result()

    def release(self, stream_id: str) -> bytes | None:
        handle = self.handles.pop(stream_id, None)
        return None if handle is None else self._remove(stream_id, handle)

    def wait_ready(self, stream_ids: list[str], timeout_s: float) -> list[str]:
        """Wait until the given streams' workers exist and answer (a Ray actor starts a process); returns
        the ids that have no worker here."""
        missing = [s for s in stream_ids if s not in self.handles]
        for stream_id in stream_ids:
            if stream_id in self.handles:
                self._call(self.handles[stream_id], "last_seq").result(timeout=timeout_s)
        return missing

    def __enter__(self) -> _WorkerBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        for stream_id in list(self.handles):
            self.release(stream_id)


class LocalBackend(_WorkerBackend):
    """StreamWorkers in this process sharing one in-process model and one worker thread.

    One thread because the in-process stages switch LoRA adapters on the shared model; the router's own
    thread still overlaps Kafka I/O with the model.
    """

    def __init__(self, checkpoint: str | Path | None = None, key_frame_interval: int = 1) -> None:
        from operators.local_stages import LocalStages  # loads torch and the model

        super().__init__(key_frame_interval)
        stages = LocalStages.from_checkpoint(checkpoint)
        self._stages_factory = lambda: stages
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="local-stages")

    def _create(self, stream_id: str, prompt: PromptSpec | None, restore: bytes | None) -> StreamWorker:
        return StreamWorker(stream_id, self._stages_factory, prompt, self.key_frame_interval, restore)

    def _call(self, handle: Any, method: str, *args: Any) -> Future[Any]:
        return self.executor.submit(getattr(handle, method), *args)

    def _remove(self, stream_id: str, handle: Any) -> bytes | None:
        return self._call(handle, "checkpoint").result()

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self.executor.shutdown(wait=True, cancel_futures=True)


class RayBackend(_WorkerBackend):
    """One Ray actor per stream from the :class:`StreamRegistry`; the actors call the Serve deployments."""

    def __init__(self, registry: Any, key_frame_interval: int = 1) -> None:
        super().__init__(key_frame_interval)
        self.registry = registry

    def _create(self, stream_id: str, prompt: PromptSpec | None, restore: bytes | None) -> Any:
        return self.registry.get(stream_id, create_with=prompt, restore=restore)

    def _call(self, handle: Any, method: str, *args: Any) -> Future[Any]:
        return getattr(handle, method).remote(*args).future()

    def _remove(self, stream_id: str, handle: Any) -> bytes | None:
        return self.registry.remove(stream_id)


@contextlib.contextmanager
def make_backend(
    local: bool,
    checkpoint: str | None = None,
    ray_address: str | None = None,
    deploy: ServeMode | None = "fused",
) -> Iterator[StreamBackend]:
    """The backend the CLI asked for, closed on exit: in-process, or Ray actors on the Serve app
    (joining ``ray_address`` or a new local Ray, deploying the app in ``deploy`` mode if it is not running)."""
    if local:
        with LocalBackend(checkpoint) as backend:
            yield backend
        return
    from pipeline.serve.serve_stages import ServeStagesFactory
    from pipeline.stream_registry import StreamRegistry

    with ray_serve_app(ray_address, deploy, checkpoint=checkpoint) as app_name:
        with RayBackend(StreamRegistry(ServeStagesFactory(app_name))) as backend:
            yield backend
