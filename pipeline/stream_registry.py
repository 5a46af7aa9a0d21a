"""The router's map of stream id -> per-stream Ray actor: create, adopt, restore, checkpoint, evict.

    registry = StreamRegistry(ServeStagesFactory(app_name="hyperseg"), idle_timeout_s=30)
    actor = registry.get("cam-1", create_with=PromptSpec(task="referring", text="the red car"))
    record = ray.get(actor.process.remote(FrameInput(seq, ts, "jpeg", payload)))
    blob = registry.remove("cam-1")               # checkpoint, then kill: hand it to another router
    registry.get("cam-1", restore=blob)           # ... which resumes the stream where it was
    registry.evict_idle()                         # streams not seen for idle_timeout_s: checkpoint, kill, free

Each stream is one named actor (`stream:<id>` in the registry's namespace), so a second `get` for the same id
anywhere in the cluster adopts the live actor instead of creating a twin. Checkpoints of evicted streams are kept
(a few KB each) so a stream that comes back resumes its temporal state; `recover` rebuilds a stream whose actor
died from its latest checkpoint (`checkpoint_all` refreshes them).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.actor import ActorHandle

from monitoring import metrics
from operators.prompt_spec import PromptSpec
from pipeline.stream_actor import StagesFactory, StreamActor


@dataclass
class RegistryConfig:
    idle_timeout_s: float = 30.0
    key_frame_interval: int = 1
    namespace: str = "hyperseg"
    # Checkpoints kept for evicted streams (a few KB each for the tiny model, a few hundred KB for the 3B);
    # beyond this the least recently stored are dropped and those streams restart afresh.
    max_kept_checkpoints: int = 1000
    # Stream actors mostly wait on Serve handles: a small CPU share keeps many of them schedulable.
    actor_options: dict[str, Any] = field(default_factory=lambda: {"num_cpus": 0.05})


class StreamRegistry:
    def __init__(self, stages_factory: StagesFactory, idle_timeout_s: float | None = None,
                 config: RegistryConfig | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or RegistryConfig()
        if idle_timeout_s is not None:
            self.config.idle_timeout_s = idle_timeout_s
        self.stages_factory = stages_factory
        self._clock = clock
        self._actors: dict[str, ActorHandle] = {}
        self._last_used: dict[str, float] = {}
        self._checkpoints: OrderedDict[str, bytes] = OrderedDict()  # latest per stream, evicted ones included

    def actor_name(self, stream_id: str) -> str:
        return f"stream:{stream_id}"

    def get(self, stream_id: str, create_with: PromptSpec | None = None, restore: bytes | None = None) -> ActorHandle:
        """The stream's actor: the live one, else one created from `restore` (or the stream's last checkpoint
        when it was evicted) or with the prompt `create_with`. On a live actor, `create_with` / `restore` are
        ignored: use `actor.set_prompt` / `remove` first."""
        if not stream_id:
            raise ValueError("stream_id must be a non-empty string")
        self._last_used[stream_id] = self._clock()
        actor = self._actors.get(stream_id)
        if actor is None:
            actor = self._create(stream_id, create_with, restore if restore is not None
                                 else self._checkpoints.get(stream_id))
            self._actors[stream_id] = actor
            metrics.set_active_streams(len(self._actors))
        return actor

    def _create(self, stream_id: str, prompt: PromptSpec | None, restore: bytes | None) -> ActorHandle:
        return StreamActor.options(
            name=self.actor_name(stream_id), namespace=self.config.namespace, get_if_exists=True,
            **self.config.actor_options,
        ).remote(stream_id, self.stages_factory, prompt, self.config.key_frame_interval, restore)

    def streams(self) -> list[str]:
        return sorted(self._actors)

    def remove(self, stream_id: str) -> bytes | None:
        """Checkpoint and kill the stream's actor; its bytes, or None if the stream has no actor here."""
        blob = self._stop(stream_id)
        self._checkpoints.pop(stream_id, None)
        self._last_used.pop(stream_id, None)
        return blob

    def evict_idle(self) -> list[str]:
        """Checkpoint and kill every stream idle longer than the timeout; their ids. They resume on `get`."""
        now = self._clock()
        idle = [s for s in self._actors if now - self._last_used.get(s, now) > self.config.idle_timeout_s]
        for stream_id in idle:
            blob = self._stop(stream_id)
            if blob is not None:
                self._keep(stream_id, blob)
            metrics.stream_evicted()
        return idle

    def checkpoint_all(self) -> dict[str, bytes]:
        """Fresh checkpoints of every live stream (kept for `recover`); stream id -> bytes."""
        ids = list(self._actors)
        blobs = ray.get([self._actors[s].checkpoint.remote() for s in ids])
        for stream_id, blob in zip(ids, blobs):
            self._keep(stream_id, blob)
        return dict(zip(ids, blobs))

    def _keep(self, stream_id: str, blob: bytes) -> None:
        self._checkpoints[stream_id] = blob
        self._checkpoints.move_to_end(stream_id)
        while len(self._checkpoints) > self.config.max_kept_checkpoints:
            self._checkpoints.popitem(last=False)

    def recover(self, stream_id: str) -> ActorHandle:
        """Replace a stream's dead actor with one restored from its latest checkpoint."""
        actor = self._actors.pop(stream_id, None)
        if actor is not None:
            ray.kill(actor, no_restart=True)
            self._await_name_released(stream_id)
        return self.get(stream_id)

    def _stop(self, stream_id: str) -> bytes | None:
        actor = self._actors.pop(stream_id, None)
        if actor is None:
            return None
        try:
            blob = ray.get(actor.checkpoint.remote())
        except ray.exceptions.RayActorError:  # already dead: its last stored checkpoint is all there is
            blob = self._checkpoints.get(stream_id)
        ray.kill(actor, no_restart=True)
        self._await_name_released(stream_id)
        metrics.set_active_streams(len(self._actors))
        return blob

    def _await_name_released(self, stream_id: str, timeout_s: float = 10.0) -> None:
        """Ray frees a killed actor's name asynchronously; a re-create before that would adopt the dead one."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                ray.get_actor(self.actor_name(stream_id), namespace=self.config.namespace)
            except ValueError:
                return
            time.sleep(0.05)
        raise TimeoutError(f"stream {stream_id!r}: killed actor still registered after {timeout_s} s")
