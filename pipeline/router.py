"""`hyperseg-stream run`: the worker. Frames topic -> per-stream actors -> masks topic, as a consumer group.

Each router is one member of a consumer group on the frames topic. A frame record's key is its stream id;
the router hands it to that stream's actor (:mod:`pipeline.stream_backends`), keeps each stream strictly in
order (one actor per stream executes its calls in submission order) while frames of different streams are in
flight at once (up to ``max_in_flight``, beyond which the assigned partitions are paused: backpressure), and
publishes each returned mask record to the masks topic keyed by stream id. The router, not the actor,
publishes: see :mod:`pipeline.delivery` for why, and for the two delivery modes.

Control: the whole control topic is replayed at start-up and read again before every frames batch
(:mod:`pipeline.control` states the ordering contract). Rebalancing: streams of revoked partitions are
drained, checkpointed to the compacted state topic and released; a stream that arrives on a newly assigned
partition is restored from its latest checkpoint (:mod:`pipeline.state_store`).
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from kafka import AsyncConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.future import Future as KafkaFuture
from kafka.partitioner.default import murmur2

from monitoring import metrics
from operators.stream_processor import SequenceError
from pipeline.broker import EmbeddedBroker, consumer_config
from pipeline.control import ControlOp, ControlReader, ControlTable
from pipeline.delivery import DELIVERY_MODES, DeliveryMode, Publisher
from pipeline.records import RecordError, encode_record, mask_headers, parse_frame_headers
from pipeline.state_store import StreamStateStore
from pipeline.stream_backends import StreamBackend, make_backend
from pipeline.topics import STATE_MAX_BYTES, TopicLayout, ensure_topics

log = logging.getLogger(__name__)

#: Group settings against the embedded broker: its fast join, with room for a slow batch on a busy CPU
#: (a router that does not poll within max_poll_interval_ms loses its partitions).
EMBEDDED_GROUP_OVERRIDES: dict[str, int] = {**EmbeddedBroker.GROUP_OVERRIDES, "max_poll_interval_ms": 120_000}


@dataclass(frozen=True)
class RouterSettings:
    """Everything one router needs; the CLI maps its flags onto this."""

    bootstrap: str
    topics: TopicLayout = TopicLayout()
    group_id: str = "hyperseg-router"
    instance_id: str = field(default_factory=socket.gethostname)
    delivery: DeliveryMode = "at-least-once"
    #: Frames handed to actors whose masks are not yet published, over all streams (pause beyond it).
    max_in_flight: int = 8
    #: Frames whose capture is older than this many seconds are dropped, not processed (live backpressure);
    #: None keeps every frame (files, or when latency matters less than completeness).
    max_lag_s: float | None = None
    commit_interval_s: float = 1.0
    #: Every this many seconds, checkpoint every stream to the state topic (after its masks are out), so a
    #: router that crashes loses at most this much temporal state; None: only on hand-over.
    checkpoint_interval_s: float | None = 30.0
    #: A stream with no frame for this many seconds is checkpointed to the state topic and its actor freed;
    #: its next frame restores it. None: never.
    idle_evict_s: float | None = 60.0
    #: Stop after this many frames were taken (tests, demos); None: run until stopped.
    max_frames: int | None = None
    #: Stop after no frame arrived for this many seconds since partitions were assigned; None: run until stopped.
    idle_exit_s: float | None = None
    consumer_overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.delivery not in DELIVERY_MODES:
            raise ValueError(f"delivery must be one of {DELIVERY_MODES}, got {self.delivery!r}")
        if self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {self.max_in_flight}")

    @property
    def transactional_id(self) -> str:
        """Stable per instance: a restarted router fences its former self and aborts what it left open."""
        return f"{self.group_id}-{self.instance_id}"


@dataclass
class StreamCounters:
    """What the router did with one stream's frames."""

    taken: int = 0
    published: int = 0
    dropped_lag: int = 0
    skipped: int = 0
    failed: int = 0


@dataclass
class _Pending:
    """A frame handed to an actor: where it came from and the future of its mask record."""

    stream_id: str
    seq: int
    capture_ts: float
    future: Future[dict[str, Any]]
    cell: list[Any]


def _off_loop(work: Callable[[list[TopicPartition]], None], partitions: list[TopicPartition]) -> KafkaFuture:
    """Run ``work`` in a thread and return a future the consumer's I/O loop can await.

    kafka-python 3 calls rebalance listeners on its I/O loop, which must keep heart-beating while a hand-over
    drains frames and checkpoints actors, and which cannot serve a blocking consumer call (commit) made from
    itself. A worker thread does the work; the loop awaits its future.
    """
    future = KafkaFuture()

    def run() -> None:
        try:
            work(partitions)
        except BaseException as exc:  # noqa: BLE001 - handed to the coordinator, which logs it
            log.exception("rebalance work %s failed", getattr(work, "__name__", work))
            future.failure(exc)
        else:
            future.success(None)

    threading.Thread(target=run, name="rebalance", daemon=True).start()
    return future


class _Rebalance(AsyncConsumerRebalanceListener):
    """Forwards the consumer's rebalance callbacks to the router, off the consumer's I/O loop."""

    def __init__(self, router: Router) -> None:
        self.router = router

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await _off_loop(self.router.hand_over, list(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await _off_loop(self.router.take_over, list(assigned))

    async def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        await _off_loop(self.router.lose, list(lost))


class Router:
    """One consumer-group member; :meth:`run` until stopped."""

    def __init__(self, settings: RouterSettings, backend: StreamBackend) -> None:
        self.settings = settings
        self.backend = backend
        self.topics = settings.topics
        self.stats: dict[str, StreamCounters] = {}
        self.control = ControlTable()
        self._queues: dict[str, deque[_Pending]] = {}
        self._stream_partition: dict[str, TopicPartition] = {}
        self._done_seq: dict[str, int] = {}
        self._last_seen: dict[str, float] = {}
        self._paused = False
        #: Set once the router holds partitions (tests and the demo start producing after it).
        self.ready = threading.Event()
        overrides = settings.consumer_overrides
        self.consumer = KafkaConsumer(**consumer_config(settings.bootstrap, settings.group_id, **overrides))
        self.publisher = Publisher(
            settings.bootstrap,
            self.consumer,
            settings.delivery,
            settings.transactional_id,
            max_request_size=STATE_MAX_BYTES,
        )
        self.control_reader = ControlReader(settings.bootstrap, self.topics.control)
        self.state_store = StreamStateStore(settings.bootstrap, self.topics.state)

    # ---- control -------------------------------------------------------------------------------------------
    def apply_control(self, ops: list[ControlOp]) -> None:
        """Apply control operations: prompts and adapters are set on the actor when their frame comes."""
        for op in ops:
            log.info("control: %s %s", op.op, op.stream_id)
            if op.op == "remove-stream" or (op.op == "add-stream" and self.backend.has(op.stream_id)):
                self._forget(op.stream_id)  # re-added streams start over with the new prompt
            try:
                self.control.apply(op)
            except RecordError as exc:
                log.error("control ignored: %s", exc)
        if any(op.op == "add-stream" for op in ops) and self.consumer.assignment():
            self._prewarm(list(self.consumer.assignment()))

    def _forget(self, stream_id: str) -> None:
        """Finish the stream's frames, drop its actor and its stored checkpoint (a tombstone)."""
        self._drain(lambda p: p.stream_id == stream_id)
        self.backend.release(stream_id)
        self.state_store.save(self.publisher, stream_id, None)
        self._drop(stream_id)

    def _drop(self, stream_id: str) -> None:
        """Forget what this router knows about a stream that left it."""
        for table in (self._done_seq, self._stream_partition, self._last_seen):
            table.pop(stream_id, None)

    # ---- frames --------------------------------------------------------------------------------------------
    def _counters(self, stream_id: str) -> StreamCounters:
        return self.stats.setdefault(stream_id, StreamCounters())

    def take(self, record: ConsumerRecord) -> None:
        """Route one frames-topic record: submit it to its stream's actor, or mark it done if it is skipped."""
        tp = TopicPartition(record.topic, record.partition)
        cell = self.publisher.tracker.add(tp, record.offset)
        try:
            meta = parse_frame_headers(record.headers)
            stream_id = (record.key or b"").decode("utf-8")
        except (RecordError, UnicodeDecodeError) as exc:
            log.error("frames offset %d skipped: %s", record.offset, exc)
            cell[1] = True
            return
        counters = self._counters(stream_id)
        counters.taken += 1
        config = self.control.streams.get(stream_id)
        if config is None:
            reason = "removed" if stream_id in self.control.removed else "not configured (no add-stream)"
            self._skip(stream_id, meta.seq, cell, reason)
            return
        self._stream_partition[stream_id] = tp
        self._last_seen[stream_id] = time.monotonic()
        self._open(stream_id)
        if meta.seq <= self._done_seq.get(stream_id, -1):
            self._skip(stream_id, meta.seq, cell, "already processed before the last checkpoint")
            return
        if self.settings.max_lag_s is not None and time.time() - meta.capture_ts > self.settings.max_lag_s:
            counters.dropped_lag += 1
            cell[1] = True
            return
        if self.control.due(stream_id, meta.seq):  # queued behind the stream's earlier frames: next frame on
            self.backend.set_prompt(stream_id, config.prompt)
        future = self.backend.process(stream_id, record.value, meta)
        self._queues.setdefault(stream_id, deque()).append(_Pending(stream_id, meta.seq, meta.capture_ts, future, cell))

    def _skip(self, stream_id: str, seq: int, cell: list[Any], reason: str) -> None:
        counters = self._counters(stream_id)
        if counters.skipped == 0:
            log.warning("stream %s: frame %d skipped: %s", stream_id, seq, reason)
        counters.skipped += 1
        cell[1] = True

    def _open(self, stream_id: str) -> None:
        """Make sure the stream has its actor (restored from its latest checkpoint) and its last processed seq."""
        if not self.backend.has(stream_id):
            prompt = self.control.streams[stream_id].prompt
            self._done_seq[stream_id] = self.backend.open(stream_id, prompt, self.state_store.latest(stream_id))

    def _prewarm(self, assigned: list[TopicPartition]) -> None:
        """Create the actors of configured streams whose key maps to an assigned partition, so their first
        frame does not wait for actor start-up (assumes producers use the default key partitioner)."""
        by_topic = [tp for tp in assigned if tp.topic == self.topics.frames]
        partitions = self.consumer.partitions_for_topic(self.topics.frames) or set()
        for stream_id in self.control.streams:
            if partitions and stream_id not in self._stream_partition:
                index = (murmur2(stream_id.encode("utf-8")) & 0x7FFFFFFF) % len(partitions)
                tp = TopicPartition(self.topics.frames, sorted(partitions)[index])
                if tp in by_topic:
                    self._stream_partition[stream_id] = tp
                    self._open(stream_id)

    def publish_ready(self) -> None:
        """Publish, per stream in order, every mask record whose frame is done (a stream's head blocks it)."""
        for stream_id, queue in self._queues.items():
            while queue and queue[0].future.done():
                self._publish(queue.popleft())

    def _publish(self, pending: _Pending) -> None:
        counters = self._counters(pending.stream_id)
        try:
            record = pending.future.result()
        except SequenceError:
            counters.skipped += 1  # redelivered after the checkpoint: its mask is already out
            pending.cell[1] = True
            return
        except Exception as exc:  # noqa: BLE001 - a frame that fails is reported and skipped, never fatal
            log.error("stream %s frame %d failed: %s", pending.stream_id, pending.seq, exc)
            counters.failed += 1
            pending.cell[1] = True
            return
        self._done_seq[pending.stream_id] = pending.seq
        self.publisher.send(
            self.topics.masks,
            pending.stream_id.encode("utf-8"),
            encode_record(record),
            mask_headers(pending.seq, pending.capture_ts),
            pending.cell,
        )
        counters.published += 1

    @property
    def in_flight(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    def _drain(self, which: Callable[[_Pending], bool] = lambda _: True) -> None:
        """Wait for the selected streams' frames and publish them (the others keep flowing)."""
        for queue in self._queues.values():
            if queue and which(queue[0]):
                for pending in list(queue):
                    pending.future.exception()  # waits; errors are reported by _publish
        self.publish_ready()

    # ---- rebalancing -------------------------------------------------------------------------------------
    def hand_over(self, revoked: list[TopicPartition]) -> None:
        """Partitions leave this router: finish their frames, commit, checkpoint and release their streams."""
        self._drain()
        self.publisher.flush()
        streams = [s for s, tp in self._stream_partition.items() if tp in revoked]
        for stream_id in streams:
            state = self.backend.release(stream_id)
            if state is not None:
                self.state_store.save(self.publisher, stream_id, state)
            self._drop(stream_id)
        self.publisher.flush()
        self.publisher.commit()
        self.publisher.tracker.forget(revoked)
        if streams:
            log.info("handed over %s (partitions %s)", streams, [tp.partition for tp in revoked])

    def checkpoint_streams(self) -> None:
        """Publish what is in flight, then write every stream's checkpoint and commit: a checkpoint never
        covers a frame whose mask might still be lost, so restoring it cannot skip an unpublished frame."""
        self._drain()
        self.publisher.flush()
        for stream_id in list(self._stream_partition):
            if self.backend.has(stream_id):
                self.state_store.save(self.publisher, stream_id, self.backend.checkpoint(stream_id))
        self.publisher.flush()
        self.publisher.commit()

    def evict_idle(self) -> list[str]:
        """Checkpoint and free the actors of streams idle longer than ``idle_evict_s`` (nothing in flight)."""
        limit, now = self.settings.idle_evict_s, time.monotonic()
        idle = [s for s, seen in self._last_seen.items()
                if limit is not None and now - seen > limit and self.backend.has(s) and not self._queues.get(s)]
        if idle:
            self.publisher.flush()  # the checkpoint must not get ahead of the masks it covers
        for stream_id in idle:
            state = self.backend.release(stream_id)
            if state is not None:
                self.state_store.save(self.publisher, stream_id, state)
            self._done_seq.pop(stream_id, None)
            self._last_seen.pop(stream_id, None)  # the partition mapping stays: a hand-over still knows it
            metrics.stream_evicted()
            log.info("stream %s idle for %.0f s: checkpointed and evicted", stream_id, limit)
        return idle

    def lose(self, lost: list[TopicPartition]) -> None:
        """Partitions were taken away without a hand-over (this router missed the group's deadlines): their
        frames now belong to another router, so nothing is committed or checkpointed; the actors are dropped."""
        log.warning("lost partitions %s; their streams restart elsewhere", [tp.partition for tp in lost])
        self.publisher.abort()
        for stream_id in [s for s, tp in self._stream_partition.items() if tp in lost]:
            self._queues.pop(stream_id, None)
            self.backend.release(stream_id)
            self._drop(stream_id)
        self.publisher.tracker.forget(lost)

    def take_over(self, assigned: list[TopicPartition]) -> None:
        """Partitions arrive: read the latest checkpoints so their streams resume where they were."""
        self.state_store.refresh()
        self._prewarm(assigned)
        log.info("assigned partitions %s", [tp.partition for tp in assigned])
        self.ready.set()

    # ---- main loop ---------------------------------------------------------------------------------------
    def report_depth(self) -> None:
        """Queue depths for Prometheus: frames in flight here, and frames waiting in Kafka for this router
        (the consumer lag, from the high-water marks of its last fetches: the signal to scale routers on)."""
        metrics.set_queue_depth("router_in_flight", self.in_flight)
        lag = 0
        for tp in self.consumer.assignment():
            highwater, position = self.consumer.highwater(tp), self.consumer.position(tp)
            if highwater is not None and position is not None:
                lag += max(highwater - position, 0)
        metrics.set_queue_depth("frames_lag", lag)

    def _backpressure(self, taken: int) -> None:
        """Pause fetching while too many frames are in flight (or max_frames were taken); resume below it."""
        limit = self.settings.max_frames
        full = self.in_flight >= self.settings.max_in_flight or (limit is not None and taken >= limit)
        if full or self._paused:  # pausing every time also covers partitions assigned while paused
            assignment = list(self.consumer.assignment())
            (self.consumer.pause if full else self.consumer.resume)(*assignment)
            self._paused = full

    def run(self, stop: threading.Event | None = None) -> dict[str, StreamCounters]:
        """Consume until ``stop`` is set, ``max_frames`` were taken or ``idle_exit_s`` passed without a frame."""
        stop = stop or threading.Event()
        self.apply_control(self.control_reader.catch_up())
        self.consumer.subscribe([self.topics.frames], listener=_Rebalance(self))
        transactional = self.publisher.transactional
        taken, last_commit = 0, time.monotonic()
        last_frame: float | None = None  # idle time counts from the first assignment (joining can take a while)
        last_checkpoint = time.monotonic()
        try:
            while not stop.is_set():
                if self.settings.max_frames is not None and taken >= self.settings.max_frames and not self.in_flight:
                    break
                if last_frame is None and self.ready.is_set():
                    last_frame = time.monotonic()
                idle = self.settings.idle_exit_s
                if idle is not None and last_frame is not None and time.monotonic() - last_frame > idle:
                    break
                self._backpressure(taken)
                room = self.settings.max_in_flight - self.in_flight
                if self.settings.max_frames is not None:
                    room = min(room, self.settings.max_frames - taken)
                # Paused partitions return nothing; polling anyway keeps the group membership alive.
                batch = self.consumer.poll(timeout_ms=20 if self.in_flight else 200, max_records=max(room, 1))
                records = [r for part in batch.values() for r in part]
                # Control written before these frames were fetched applies to them: read it to its end first.
                self.apply_control(self.control_reader.catch_up() if records else self.control_reader.poll())
                if records:
                    last_frame = time.monotonic()
                    for record in records:
                        self.take(record)
                    taken += len(records)
                if transactional:
                    if records:
                        self._drain()
                        self.report_depth()
                    self.publisher.commit()  # the batch's masks, offsets and any state writes, atomically
                else:
                    self.publish_ready()
                    if time.monotonic() - last_commit > self.settings.commit_interval_s:
                        self.publisher.commit()
                        self.report_depth()
                        last_commit = time.monotonic()
                interval = self.settings.checkpoint_interval_s
                if interval is not None and time.monotonic() - last_checkpoint > interval:
                    self.checkpoint_streams()
                    last_checkpoint = time.monotonic()
                if self.evict_idle():
                    self.publisher.flush()
                    self.publisher.commit()
            self.shutdown()
        except BaseException:
            self.publisher.abort()
            raise
        finally:
            self.close()
        return self.stats

    def shutdown(self) -> None:
        """Graceful stop: publish what is in flight, commit, checkpoint every stream for whoever comes next."""
        self.hand_over(list(self.consumer.assignment()))

    def close(self) -> None:
        for closer in (self.publisher.close, self.consumer.close, self.control_reader.close, self.state_store.close):
            try:
                closer()
            except Exception as exc:  # noqa: BLE001 - closing the rest matters more
                log.warning("close: %s", exc)


class RouterThread(threading.Thread):
    """A router in a thread of this process (the demo and the tests share their Ray driver with it)."""

    def __init__(self, settings: RouterSettings, backend: StreamBackend) -> None:
        super().__init__(name="router", daemon=True)
        self.router = Router(settings, backend)
        self.stop = threading.Event()
        self.stats: dict[str, StreamCounters] = {}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.stats = self.router.run(self.stop)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            self.error = exc


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hyperseg-stream run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic-prefix", help="use PREFIX-frames, PREFIX-masks, ... instead of frames, masks, ...")
    parser.add_argument("--group", default="hyperseg-router", help="consumer group id")
    parser.add_argument("--instance-id", default=socket.gethostname(), help="stable id of this router")
    parser.add_argument("--delivery", choices=DELIVERY_MODES, default="at-least-once")
    parser.add_argument("--max-in-flight", type=int, default=8)
    parser.add_argument("--checkpoint-interval", type=float, default=30.0,
                        help="seconds between stream checkpoints to the state topic (0: only on hand-over)")
    parser.add_argument("--idle-evict", type=float, default=60.0,
                        help="free a stream's actor after this many seconds without a frame (0: never)")
    parser.add_argument("--max-lag", type=float, help="drop frames captured more than this many seconds ago")
    parser.add_argument("--max-frames", type=int, help="stop after this many frames")
    parser.add_argument("--idle-exit", type=float, help="stop after this many seconds without a frame")
    parser.add_argument("--no-ray", action="store_true", help="run the stages in this process (no Ray)")
    parser.add_argument("--ray-address", help="Ray cluster to join ('auto': this machine's); default: start one")
    parser.add_argument("--deploy", choices=["split", "fused", "none"], default="fused",
                        help="deploy the Serve app in this mode when it is not running ('none': expect it)")
    parser.add_argument("--checkpoint", help="model checkpoint directory (default: the shipped model)")
    parser.add_argument("--fast-group-join", action="store_true", help="short group timeouts (embedded broker)")
    parser.add_argument("--create-topics", type=int, metavar="PARTITIONS",
                        help="create missing topics first, frames and masks with this many partitions")
    parser.add_argument("--metrics-port", type=int, default=9400, help="Prometheus /metrics port (0: off)")
    parser.add_argument("--log-level", default="INFO")
    return parser


def run_main(argv: list[str]) -> int:
    """CLI entry (``hyperseg-stream run``): route until Ctrl-C / SIGTERM, then hand over cleanly."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.log_level.upper() != "DEBUG":
        logging.getLogger("kafka").setLevel(logging.WARNING)  # the client's connection chatter
    settings = RouterSettings(
        bootstrap=args.bootstrap,
        topics=TopicLayout.prefixed(args.topic_prefix) if args.topic_prefix else TopicLayout(),
        group_id=args.group,
        instance_id=args.instance_id,
        delivery=args.delivery,
        max_in_flight=args.max_in_flight,
        max_lag_s=args.max_lag,
        checkpoint_interval_s=args.checkpoint_interval or None,
        idle_evict_s=args.idle_evict or None,
        max_frames=args.max_frames,
        idle_exit_s=args.idle_exit,
        consumer_overrides=dict(EMBEDDED_GROUP_OVERRIDES) if args.fast_group_join else {},
    )
    if args.create_topics:
        ensure_topics(args.bootstrap, settings.topics, partitions=args.create_topics)
    if args.metrics_port:
        metrics.start_metrics_server(args.metrics_port)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    deploy = None if args.deploy == "none" else args.deploy
    with make_backend(args.no_ray, args.checkpoint, args.ray_address, deploy) as backend:
        stats = Router(settings, backend).run(stop)
    for stream_id, counters in stats.items():
        log.info("stream %s: %s", stream_id, counters)
    return 0
