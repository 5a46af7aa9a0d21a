"""Ingest end to end on a real broker (tansu), real clips, a real RTSP server, and independent Kafka clients."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from operators.frame_codec import decode_jpeg
from pipeline.broker import EmbeddedBroker, consumer_config
from pipeline.ingest import IngestSettings, StreamReport, run_ingest
from pipeline.reconnect import RetryPolicy
from pipeline.records import decode_record, parse_frame_headers
from pipeline.sources import SourceSpec

pytestmark = pytest.mark.integration
BIKES_FRAMES = 250


def consume(bootstrap: str, topic: str, count: int, timeout_s: float = 15) -> list[ConsumerRecord]:
    """Read ``topic`` partition 0 from the start until ``count`` records arrived or nothing came for 1 s."""
    consumer = KafkaConsumer(**consumer_config(bootstrap, None))
    consumer.assign([TopicPartition(topic, 0)])
    consumer.seek_to_beginning()
    records: list[ConsumerRecord] = []
    deadline, last_new = time.monotonic() + timeout_s, time.monotonic()
    try:
        while len(records) < count and time.monotonic() < deadline and time.monotonic() - last_new < 1.0:
            batch = consumer.poll(timeout_ms=200)
            for part in batch.values():
                records.extend(part)
                last_new = time.monotonic()
    finally:
        consumer.close()
    return records


def statuses(bootstrap: str, topic: str) -> list[dict]:
    return [decode_record(r.value, "stream_status") for r in consume(bootstrap, topic, 10**6, timeout_s=5)]


@pytest.fixture(scope="module")
def file_run(kafka_broker: EmbeddedBroker, bikes_path: Path) -> tuple[StreamReport, list[ConsumerRecord]]:
    """The whole bikes clip ingested once as JPEG into ``file-frames``."""
    kafka_broker.create_topics(["file-frames", "file-status"])
    reports = run_ingest(
        [SourceSpec("bikes", str(bikes_path))],
        kafka_broker.bootstrap,
        "file-frames",
        IngestSettings(status_topic="file-status"),
    )
    return reports["bikes"], consume(kafka_broker.bootstrap, "file-frames", BIKES_FRAMES)


def test_file_is_ingested_losslessly_in_order(
    file_run: tuple[StreamReport, list[ConsumerRecord]], bikes_path: Path
) -> None:
    report, records = file_run
    assert (report.state, report.frames, report.dropped, report.send_errors) == ("ended", BIKES_FRAMES, 0, 0)
    assert len(records) == BIKES_FRAMES and {r.key for r in records} == {b"bikes"}
    metas = [parse_frame_headers(r.headers) for r in records]
    assert [m.seq for m in metas] == list(range(BIKES_FRAMES))
    assert {(m.content_type, m.codec, m.keyframe) for m in metas} == {("image/jpeg", "jpeg", None)}
    stamps = [m.capture_ts for m in metas]
    assert stamps == sorted(stamps) and abs(stamps[0] - time.time()) < 120
    with av.open(str(bikes_path)) as clip:
        originals = [f.to_ndarray(format="rgb24") for f in clip.decode(video=0)]
    for index in (0, 137, BIKES_FRAMES - 1):
        got = decode_jpeg(records[index].value)
        assert got.shape == (272, 640, 3)
        assert np.abs(got.astype(int) - originals[index].astype(int)).mean() < 4.0, f"frame {index} differs"
    assert max(len(r.value) for r in records) < 200_000


def test_file_status_is_published(kafka_broker: EmbeddedBroker, file_run: tuple) -> None:
    assert [(s["stream_id"], s["state"]) for s in statuses(kafka_broker.bootstrap, "file-status")] == [
        ("bikes", "up"),
        ("bikes", "ended"),
    ]


def test_confluent_kafka_reads_our_record(kafka_broker: EmbeddedBroker, file_run: tuple) -> None:
    """librdkafka (another implementation, as in Go/Java/C# clients) reads key, value and headers."""
    confluent_kafka = pytest.importorskip("confluent_kafka")
    _, records = file_run
    consumer = confluent_kafka.Consumer(
        {"bootstrap.servers": kafka_broker.bootstrap, "group.id": "independent", "enable.auto.commit": False}
    )
    try:
        consumer.assign([confluent_kafka.TopicPartition("file-frames", 0, 5)])
        message = None
        deadline = time.monotonic() + 15
        while message is None and time.monotonic() < deadline:
            message = consumer.poll(0.5)
        assert message is not None and message.error() is None, message and message.error()
        assert (message.key(), message.value(), message.offset()) == (b"bikes", records[5].value, 5)
        assert dict(message.headers()) == dict(records[5].headers)
    finally:
        consumer.close()


def test_passthrough_packets_decode_downstream(kafka_broker: EmbeddedBroker, bikes_path: Path) -> None:
    kafka_broker.create_topics(["pt-frames", "pt-status"])
    reports = run_ingest(
        [SourceSpec("bikes-pt", str(bikes_path))],
        kafka_broker.bootstrap,
        "pt-frames",
        IngestSettings(passthrough=True, status_topic="pt-status"),
    )
    assert reports["bikes-pt"].state == "ended"
    records = consume(kafka_broker.bootstrap, "pt-frames", BIKES_FRAMES)
    metas = [parse_frame_headers(r.headers) for r in records]
    assert len(records) == BIKES_FRAMES and metas[0].keyframe is True
    assert {(m.content_type, m.codec) for m in metas} == {("video/h264", "h264")}
    assert sum(m.keyframe for m in metas) == 6  # the clip's GOP structure survives
    decoder = av.CodecContext.create("h264", "r")
    frames = [f for r in records for f in decoder.decode(av.Packet(r.value))] + list(decoder.decode(None))
    assert len(frames) == BIKES_FRAMES and (frames[0].height, frames[0].width) == (272, 640)


@pytest.fixture
def hanging_url() -> Iterator[str]:
    """A TCP port that accepts connections and never answers: a camera whose network hangs."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield f"rtsp://127.0.0.1:{server.getsockname()[1]}/hang"


def test_rtsp_ingest_survives_dead_sources(kafka_broker: EmbeddedBroker, rtsp_url: str, hanging_url: str) -> None:
    kafka_broker.create_topics(["live-frames", "live-status"])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        refused_url = f"rtsp://127.0.0.1:{sock.getsockname()[1]}/gone"
    sources = [
        SourceSpec("cam", rtsp_url, rtsp_transport="udp"),
        SourceSpec("refused", refused_url),
        SourceSpec("hanging", hanging_url),
    ]
    settings = IngestSettings(
        max_frames=40,
        status_topic="live-status",
        retry=RetryPolicy(max_attempts=2, initial_backoff_s=0.1, open_timeout_s=3.0),
    )
    started = time.monotonic()
    reports = run_ingest(sources, kafka_broker.bootstrap, "live-frames", settings)
    elapsed = time.monotonic() - started
    assert {k: r.state for k, r in reports.items()} == {"cam": "stopped", "refused": "down", "hanging": "down"}
    assert reports["cam"].frames == 40 and elapsed < 30

    records = consume(kafka_broker.bootstrap, "live-frames", 40)
    metas = [parse_frame_headers(r.headers) for r in records]
    assert len(records) == 40 and {r.key for r in records} == {b"cam"}
    seqs = [m.seq for m in metas]
    assert seqs == sorted(seqs) and len(set(seqs)) == 40  # ordered; gaps only where drop-oldest dropped
    assert decode_jpeg(records[-1].value).shape == (272, 640, 3)

    status = statuses(kafka_broker.bootstrap, "live-status")
    by_stream = {
        sid: [(s["state"], s["attempt"]) for s in status if s["stream_id"] == sid]
        for sid in ("cam", "refused", "hanging")
    }
    assert by_stream == {
        "cam": [("up", 0)],
        "refused": [("reconnecting", 1), ("down", 2)],
        "hanging": [("reconnecting", 1), ("down", 2)],
    }
    hanging_down = next(s for s in status if s["stream_id"] == "hanging" and s["state"] == "down")
    assert "did not open within 3.0s" in hanging_down["error"]
    # The live camera delivered frames while the hanging one was still being retried.
    assert metas[0].capture_ts < hanging_down["ts"]


def test_cli_entry_point(kafka_broker: EmbeddedBroker, bikes_path: Path) -> None:
    from pipeline.ingest import ingest_main

    kafka_broker.create_topics(["cli-frames"])
    argv = [
        "--bootstrap",
        kafka_broker.bootstrap,
        "--topic",
        "cli-frames",
        "--status-topic",
        "cli-frames-status",
        "--source",
        f"clip={bikes_path}",
        "--max-frames",
        "10",
        "--fps",
        "5",
        "--jpeg-quality",
        "40",
    ]
    assert ingest_main(argv) == 0
    records = consume(kafka_broker.bootstrap, "cli-frames", 10)
    assert [parse_frame_headers(r.headers).seq for r in records] == list(range(10))
    assert {r.key for r in records} == {b"clip"}


def test_group_consumer_config_reads_committed_frames(kafka_broker: EmbeddedBroker, file_run: tuple) -> None:
    """The shared consumer settings (cooperative-sticky, read_committed, manual commit) work in a group."""
    config = consumer_config(kafka_broker.bootstrap, "frames-readers", **EmbeddedBroker.GROUP_OVERRIDES)
    consumer = KafkaConsumer("file-frames", **config)
    try:
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + 20
        while len(records) < 20 and time.monotonic() < deadline:
            for part in consumer.poll(timeout_ms=300, max_records=20 - len(records)).values():
                records.extend(part)
        assert [parse_frame_headers(r.headers).seq for r in records] == list(range(20))
        consumer.commit()
        assert consumer.committed(TopicPartition("file-frames", 0)) == 20
    finally:
        consumer.close()
