"""Ingest: sources -> Kafka frames topic, one OS process per source.

A process per source means a camera whose driver or network hangs cannot stall the
others. Inside a process a reader thread (PyAV, reconnecting) feeds a bounded
:class:`FrameBuffer` and the main thread encodes and produces, keyed by stream id.
State changes go to a status topic, so a stream that gives up is visible downstream.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import multiprocessing.synchronize
import queue
import signal
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from operators.frame_codec import encode_jpeg
from pipeline.broker import producer_config
from pipeline.frame_buffer import FrameBuffer
from pipeline.reconnect import RetryPolicy, StreamState, supervise
from pipeline.records import build_status_record, encode_record, frame_headers, json_headers
from pipeline.sources import Frame, Packet, SourceConfigError, SourceSpec, parse_source

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestSettings:
    """Knobs shared by every source of one ingest run."""

    jpeg_quality: int = 85
    passthrough: bool = False
    queue_size: int = 8
    max_frames: int | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    status_topic: str = "stream-status"
    producer_overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames must be positive, got {self.max_frames}")


@dataclass
class StreamReport:
    """How one source's run ended: ``state`` is ended, stopped, down or crashed."""

    stream_id: str
    state: str
    frames: int = 0
    dropped: int = 0
    reconnects: int = 0
    send_errors: int = 0
    error: str | None = None


def send_status(
    producer: KafkaProducer, topic: str, stream_id: str, state: str, attempt: int, error: str | None
) -> None:
    """Publish one stream-status record, keyed by the stream id."""
    record = build_status_record(stream_id, state, attempt, error)
    producer.send(topic, key=stream_id.encode("utf-8"), value=encode_record(record, "stream_status"),
                  headers=json_headers())


class _SourceRunner:
    """Everything one source process does: read, buffer, encode, produce, report."""

    def __init__(self, spec: SourceSpec, bootstrap: str, topic: str, settings: IngestSettings) -> None:
        self.spec, self.topic, self.settings = spec, topic, settings
        self.key = spec.stream_id.encode("utf-8")
        self.producer = KafkaProducer(**producer_config(bootstrap, **settings.producer_overrides))
        self.buffer: FrameBuffer[tuple[int, Frame | Packet]] = FrameBuffer(
            settings.queue_size, "drop_oldest" if spec.is_live else "block"
        )
        self.report = StreamReport(spec.stream_id, "stopped")
        self.reader_stop = threading.Event()
        self._seq = 0
        self._await_keyframe = False

    def on_status(self, state: StreamState, attempt: int, error: str | None) -> None:
        """Log a state change and publish it on the status topic."""
        level = logging.ERROR if state == "down" else logging.WARNING if state == "reconnecting" else logging.INFO
        log.log(
            level, "stream %s %s (attempt %d)%s", self.spec.stream_id, state, attempt, f": {error}" if error else ""
        )
        self.report.reconnects += state == "reconnecting"
        self.report.error = error or self.report.error
        send_status(self.producer, self.settings.status_topic, self.spec.stream_id, state, attempt, error)

    def on_item(self, item: Frame | Packet) -> None:
        """Reader side: queue an item under the drop policy; pass-through restarts at a key frame after a drop."""
        if isinstance(item, Packet) and self.spec.is_live:
            if self.buffer.full():
                self.report.dropped += self.buffer.clear()
                self._await_keyframe = True
            if self._await_keyframe and not item.keyframe:
                self.report.dropped += 1
                return
            self._await_keyframe = False
        self.report.dropped += self.buffer.put((self._seq, item))
        self._seq += 1

    def read(self) -> None:
        """Reader thread body: supervise the source, then close the buffer."""
        try:
            final = supervise(
                self.spec,
                self.settings.retry,
                self.settings.passthrough,
                self.on_item,
                self.on_status,
                self.reader_stop,
            )
            self.report.state = final
        finally:
            self.buffer.close()

    def send(self, seq: int, item: Frame | Packet) -> None:
        """Encode one item and produce it keyed by stream id; failures are counted and logged, never fatal."""
        if isinstance(item, Frame):
            value, headers = (
                encode_jpeg(item.rgb, self.settings.jpeg_quality),
                frame_headers(seq, item.capture_ts, "jpeg"),
            )
        else:
            value, headers = item.data, frame_headers(seq, item.capture_ts, item.codec, item.keyframe)
        try:
            future = self.producer.send(self.topic, key=self.key, value=value, headers=headers)
        except KafkaError as exc:
            self._send_failed(exc)
            return
        future.add_errback(self._send_failed)
        self.report.frames += 1

    def _send_failed(self, exc: BaseException) -> None:
        self.report.send_errors += 1
        log.error("stream %s: record not delivered: %s", self.spec.stream_id, exc)

    def run(self, stop: mp.synchronize.Event) -> StreamReport:
        """Produce until the source finishes, ``stop`` is set, or ``max_frames`` went out; then flush."""
        reader = threading.Thread(target=self.read, name=f"read-{self.spec.stream_id}", daemon=True)
        reader.start()
        limit = self.settings.max_frames
        while not self.buffer.drained:
            if stop.is_set() or (limit is not None and self.report.frames >= limit):
                self.reader_stop.set()
                self.buffer.close()
                break
            entry = self.buffer.get(timeout=0.1)
            if entry is not None:
                self.send(*entry)
        reader.join(timeout=self.settings.retry.open_timeout_s + self.settings.retry.stall_timeout_s)
        self.producer.flush(timeout=30)
        self.producer.close(timeout=10)
        return self.report


def _source_process(
    spec: SourceSpec,
    bootstrap: str,
    topic: str,
    settings: IngestSettings,
    stop: mp.synchronize.Event,
    results: mp.Queue,
    log_level: int,
) -> None:
    """Entry point of one source's process; Ctrl-C is handled by the parent through ``stop``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=log_level, format="%(asctime)s %(processName)s %(levelname)s %(message)s")
    results.put(_SourceRunner(spec, bootstrap, topic, settings).run(stop))


def _report_crash(spec: SourceSpec, bootstrap: str, settings: IngestSettings, exitcode: int | None) -> StreamReport:
    """A source process that died without a report is logged and published as down."""
    error = f"ingest process exited with code {exitcode}"
    log.error("stream %s crashed: %s", spec.stream_id, error)
    producer = KafkaProducer(**producer_config(bootstrap, **settings.producer_overrides))
    try:
        send_status(producer, settings.status_topic, spec.stream_id, "down", 0, error)
        producer.flush(timeout=10)
    finally:
        producer.close(timeout=10)
    return StreamReport(spec.stream_id, "crashed", error=error)


def run_ingest(
    sources: Sequence[SourceSpec],
    bootstrap: str,
    topic: str = "frames",
    settings: IngestSettings = IngestSettings(),
    stop: mp.synchronize.Event | None = None,
) -> dict[str, StreamReport]:
    """Ingest every source into ``topic`` until all end or ``stop`` is set; returns one report per stream."""
    ids = [spec.stream_id for spec in sources]
    if len(set(ids)) != len(ids):
        raise SourceConfigError(f"stream ids must be unique, got {ids}")
    ctx = mp.get_context("spawn")
    stop = stop if stop is not None else ctx.Event()
    results: mp.Queue = ctx.Queue()
    processes = {
        spec.stream_id: ctx.Process(
            target=_source_process,
            name=f"ingest-{spec.stream_id}",
            args=(spec, bootstrap, topic, settings, stop, results, log.getEffectiveLevel()),
        )
        for spec in sources
    }
    for process in processes.values():
        process.start()
    reports: dict[str, StreamReport] = {}
    while len(reports) < len(processes) and any(p.is_alive() for p in processes.values()):
        try:
            report = results.get(timeout=0.5)
            reports[report.stream_id] = report
        except queue.Empty:
            pass
    for process in processes.values():
        process.join()
    while not results.empty():
        report = results.get()
        reports[report.stream_id] = report
    for spec in sources:
        if spec.stream_id not in reports:
            reports[spec.stream_id] = _report_crash(spec, bootstrap, settings, processes[spec.stream_id].exitcode)
    return reports


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hyperseg-stream ingest", description="Read video sources into Kafka.")
    parser.add_argument(
        "--source",
        action="append",
        required=True,
        metavar="ID=URL",
        help="stream id and file / rtsp(s):// / http(s):// / /dev/videoN url; repeatable",
    )
    parser.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers, host:port[,host:port]")
    parser.add_argument("--topic", default="frames")
    parser.add_argument("--status-topic", default="stream-status")
    parser.add_argument("--loop", action="store_true", help="replay file sources forever")
    parser.add_argument("--realtime", action="store_true", help="replay file sources at their frame rate")
    parser.add_argument("--rtsp-transport", default="tcp", choices=["tcp", "udp", "udp_multicast", "http", "https"])
    parser.add_argument("--fps", type=float, default=None, help="target frames/s per stream (frames are skipped)")
    parser.add_argument("--jpeg-quality", type=int, default=85)
    parser.add_argument("--passthrough", action="store_true", help="send compressed H.264/HEVC packets, not JPEG")
    parser.add_argument("--queue-size", type=int, default=8)
    parser.add_argument("--max-frames", type=int, default=None, help="stop each stream after this many records")
    parser.add_argument("--max-attempts", type=int, default=5, help="consecutive failures before a stream is down")
    parser.add_argument("--stall-timeout", type=float, default=5.0, help="seconds without a frame before reconnecting")
    parser.add_argument("--log-level", default="INFO")
    return parser


def ingest_main(argv: list[str]) -> int:
    """CLI entry (``hyperseg-stream ingest``): 0 when every stream ended or was stopped, 1 if any went down."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(processName)s %(levelname)s %(message)s")
    sources = [
        parse_source(
            text, loop=args.loop, rtsp_transport=args.rtsp_transport, target_fps=args.fps, realtime=args.realtime
        )
        for text in args.source
    ]
    settings = IngestSettings(
        jpeg_quality=args.jpeg_quality,
        passthrough=args.passthrough,
        queue_size=args.queue_size,
        max_frames=args.max_frames,
        status_topic=args.status_topic,
        retry=RetryPolicy(max_attempts=args.max_attempts, stall_timeout_s=args.stall_timeout),
    )
    stop = mp.get_context("spawn").Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    reports = run_ingest(sources, args.bootstrap, args.topic, settings, stop)
    for report in reports.values():
        log.info("%s", report)
    return 0 if all(r.state in ("ended", "stopped") for r in reports.values()) else 1
