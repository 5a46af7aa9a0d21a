"""Partition reassignment on a real broker: a second router joins, one partition moves, and its stream's state
moves with it (checkpoint on revoke to the compacted state topic, restore on assign). Local (in-process) backends
keep it fast; the Kafka side is what is under test."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kafka.partitioner.default import murmur2
from prometheus_client import REGISTRY

from operators.prompt_spec import PromptSpec
from operators.stream_processor import read_checkpoint
from operators.synthetic import WorldConfig, make_clip
from pipeline.broker import EmbeddedBroker
from pipeline.control import ControlOp, send_control
from pipeline.router import EMBEDDED_GROUP_OVERRIDES, RouterSettings, RouterThread
from pipeline.stream_backends import LocalBackend
from pipeline.subscribe import iter_mask_records
from pipeline.topic_reader import TopicReader
from pipeline.topics import TopicLayout, ensure_topics
from test_streaming_e2e import send_frames

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _partition(stream_id: str, partitions: int = 2) -> int:
    return (murmur2(stream_id.encode()) & 0x7FFFFFFF) % partitions


def _wait_masks(bootstrap: str, topic: str, count: int, timeout_s: float = 90) -> list[dict]:
    records: list[dict] = []
    for record in iter_mask_records(bootstrap, topic, idle_timeout_s=timeout_s):
        records.append(record)
        if len(records) >= count:
            break
    return records


def test_state_moves_with_the_partition(kafka_broker: EmbeddedBroker) -> None:
    bootstrap, layout = kafka_broker.bootstrap, TopicLayout.prefixed("rebalance")
    ensure_topics(bootstrap, layout, partitions=2)
    streams = ["cam-0", next(f"cam-{i}" for i in range(1, 50) if _partition(f"cam-{i}") != _partition("cam-0"))]
    prompt = PromptSpec(task="referring", text="the red square")
    send_control(bootstrap, [ControlOp("add-stream", s, time.time(), prompt=prompt) for s in streams], layout.control)
    frames = make_clip(0, "test", WorldConfig(num_frames=8)).frames

    def router(backend: LocalBackend) -> RouterThread:
        settings = RouterSettings(bootstrap, layout, group_id="rebalance-router", instance_id=str(id(backend)),
                                  max_in_flight=2, consumer_overrides=dict(EMBEDDED_GROUP_OVERRIDES))
        thread = RouterThread(settings, backend)
        thread.start()
        return thread

    with LocalBackend() as first_backend, LocalBackend() as second_backend:
        first = router(first_backend)
        try:
            assert first.router.ready.wait(60)
            for stream_id in streams:
                send_frames(bootstrap, layout.frames, stream_id, frames[:4], 0)
            assert len(_wait_masks(bootstrap, layout.masks, 8)) == 8
            second = router(second_backend)
            try:
                assert second.router.ready.wait(60), "the second router got no partition"
                moved = [s for s in streams if s in second.router._stream_partition]
                assert len(moved) == 1 and moved[0] not in first_backend.handles  # one stream changed hands
                for stream_id in streams:
                    send_frames(bootstrap, layout.frames, stream_id, frames[4:], 4)
                records = _wait_masks(bootstrap, layout.masks, 16)
                # Every frame of both streams once, in order per stream, across the move.
                for stream_id in streams:
                    assert [r["frame_seq"] for r in records if r["stream_id"] == stream_id] == list(range(8))
                # The moved stream was restored: its worker counts all 8 frames, not the 4 it saw itself.
                assert second_backend.handles[moved[0]].processor.frames == 8
            finally:
                second.stop.set()
                second.join(60)
        finally:
            first.stop.set()
            first.join(60)
    assert first.error is None and second.error is None
    reader = TopicReader(bootstrap, layout.state)
    try:
        checkpoints = {r.key.decode(): r.value for r in reader.read_to_end()}
    finally:
        reader.close()
    header, _ = read_checkpoint(checkpoints[moved[0]])
    assert header["stream_id"] == moved[0] and header["last_seq"] is not None


@contextlib.contextmanager
def one_camera_router(broker: EmbeddedBroker, prefix: str, **settings: Any) -> Iterator[tuple[RouterThread, str]]:
    """A router (in-process model) on fresh ``prefix`` topics, with stream "cam" added; yields it once it holds
    its partition, with the bootstrap string."""
    bootstrap, layout = broker.bootstrap, TopicLayout.prefixed(prefix)
    ensure_topics(bootstrap, layout)
    send_control(bootstrap, [ControlOp("add-stream", "cam", time.time(),
                                       prompt=PromptSpec(task="referring", text="the red square"))], layout.control)
    with LocalBackend() as backend:
        thread = RouterThread(RouterSettings(bootstrap, layout, group_id=f"{prefix}-router",
                                             consumer_overrides=dict(EMBEDDED_GROUP_OVERRIDES), **settings), backend)
        thread.start()
        try:
            assert thread.router.ready.wait(60)
            yield thread, bootstrap
        finally:
            thread.stop.set()
            thread.join(60)
    assert thread.error is None


def test_periodic_checkpoints_follow_the_published_masks(kafka_broker: EmbeddedBroker) -> None:
    """With a checkpoint interval, a running router keeps the state topic current (a crash loses little), and it
    reports its lag and in-flight frames as Prometheus gauges."""
    with one_camera_router(kafka_broker, "periodic", checkpoint_interval_s=0.5) as (thread, bootstrap):
        layout = thread.router.topics
        send_frames(bootstrap, layout.frames, "cam", make_clip(0, "test", WorldConfig(num_frames=4)).frames, 0)
        assert len(_wait_masks(bootstrap, layout.masks, 4)) == 4
        reader = TopicReader(bootstrap, layout.state)
        try:
            deadline, last_seq = time.monotonic() + 20, None
            while last_seq != 3 and time.monotonic() < deadline:
                for record in reader.poll(timeout_ms=300):
                    last_seq = read_checkpoint(record.value)[0]["last_seq"]
        finally:
            reader.close()
        assert last_seq == 3 and thread.is_alive()  # written while the router runs, not at its hand-over
        # The router reports its queue depths for Prometheus: nothing left in Kafka or in flight.
        depth = {stage: REGISTRY.get_sample_value("hyperseg_queue_depth", {"stage": stage})
                 for stage in ("frames_lag", "router_in_flight")}
        assert depth == {"frames_lag": 0.0, "router_in_flight": 0.0}


def test_idle_streams_are_evicted_and_resume_from_their_checkpoint(kafka_broker: EmbeddedBroker) -> None:
    frames = make_clip(0, "test", WorldConfig(num_frames=4)).frames
    with one_camera_router(kafka_broker, "evict", idle_evict_s=1.0) as (thread, bootstrap):
        layout, backend = thread.router.topics, thread.router.backend
        send_frames(bootstrap, layout.frames, "cam", frames[:2], 0)
        assert len(_wait_masks(bootstrap, layout.masks, 2)) == 2
        deadline = time.monotonic() + 20
        while backend.has("cam") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not backend.has("cam"), "the idle stream kept its worker"
        send_frames(bootstrap, layout.frames, "cam", frames[2:], 2)
        assert [r["frame_seq"] for r in _wait_masks(bootstrap, layout.masks, 4)] == [0, 1, 2, 3]
        assert backend.handles["cam"].processor.frames == 4  # resumed from the eviction checkpoint
