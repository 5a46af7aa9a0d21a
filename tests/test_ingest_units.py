"""Ingest building blocks without Kafka: drop policies, frame skipping, back-off, reconnect, stall."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import av
import pytest

from pipeline.frame_buffer import FrameBuffer
from pipeline.reconnect import RetryPolicy, supervise
from pipeline.sources import SourceConfigError, SourceSpec, _FrameSkipper, parse_source


def test_drop_oldest_keeps_the_newest() -> None:
    buffer: FrameBuffer[int] = FrameBuffer(3, "drop_oldest")
    dropped = sum(buffer.put(i) for i in range(10))
    assert dropped == 7
    assert [buffer.get(0) for _ in range(3)] == [7, 8, 9]
    assert buffer.get(0.01) is None


def test_block_waits_for_room_and_loses_nothing() -> None:
    buffer: FrameBuffer[int] = FrameBuffer(2, "block")
    got: list[int] = []

    def consume() -> None:
        while len(got) < 50:
            item = buffer.get(1.0)
            if item is not None:
                got.append(item)
                time.sleep(0.001)

    consumer = threading.Thread(target=consume)
    consumer.start()
    assert sum(buffer.put(i) for i in range(50)) == 0
    consumer.join(timeout=10)
    assert got == list(range(50))


def test_close_releases_a_blocked_put() -> None:
    buffer: FrameBuffer[int] = FrameBuffer(1, "block")
    buffer.put(0)
    threading.Timer(0.2, buffer.close).start()
    assert buffer.put(1) == 1  # discarded once closed, instead of hanging
    assert not buffer.drained and buffer.get(0) == 0 and buffer.drained


def test_frame_skipper_keeps_target_rate() -> None:
    skipper = _FrameSkipper(5.0)
    kept = [t for t in (i / 25 for i in range(50)) if skipper.keep(t)]  # 2 s of 25 fps
    assert len(kept) == 10 and kept[:2] == [0.0, 0.2]
    assert skipper.keep(0.0)  # media time jumped back (new session): resync instead of skipping forever


def test_backoff_doubles_and_caps() -> None:
    policy = RetryPolicy(initial_backoff_s=0.5, max_backoff_s=3.0)
    assert [policy.backoff(a) for a in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_parse_source_and_kinds() -> None:
    spec = parse_source("cam1 = rtsp://10.0.0.5/live", rtsp_transport="udp")
    assert (spec.stream_id, spec.url, spec.kind, spec.is_live) == ("cam1", "rtsp://10.0.0.5/live", "rtsp", True)
    assert SourceSpec("f", "clip.mp4").is_live is False
    assert SourceSpec("d", "/dev/video0").kind == "device"
    assert SourceSpec("h", "https://x/y.m3u8").kind == "http"
    for bad in ("no-equals", "=rtsp://x", "id="):
        with pytest.raises(SourceConfigError, match="STREAM_ID=URL"):
            parse_source(bad)
    with pytest.raises(SourceConfigError, match="target_fps"):
        SourceSpec("x", "y.mp4", target_fps=0)


def _run(spec: SourceSpec, policy: RetryPolicy, until: str, timeout_s: float = 20) -> tuple[str, list[tuple]]:
    """Run supervise in a thread until a status ``until`` shows up (or it returns); bounded by ``timeout_s``."""
    statuses: list[tuple] = []
    stop = threading.Event()
    result: list[str] = []

    def on_status(state: str, attempt: int, error: str | None) -> None:
        statuses.append((state, attempt, error))
        if state == until:
            stop.set()

    thread = threading.Thread(
        target=lambda: result.append(supervise(spec, policy, False, lambda _: None, on_status, stop))
    )
    thread.start()
    thread.join(timeout_s)
    stop.set()
    thread.join(5)
    assert result, f"supervise did not return within {timeout_s}s; statuses so far: {statuses}"
    return result[0], statuses


def test_refused_source_is_reported_down_after_its_attempts() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: nothing listens there
    policy = RetryPolicy(max_attempts=3, initial_backoff_s=0.05, open_timeout_s=2)
    final, statuses = _run(SourceSpec("dead", f"rtsp://127.0.0.1:{port}/x"), policy, until="down")
    assert final == "down"
    assert [s[:2] for s in statuses] == [("reconnecting", 1), ("reconnecting", 2), ("down", 3)]
    assert "Connection refused" in statuses[-1][2]


@pytest.fixture(scope="module")
def stalling_http_url(bikes_path: Path) -> Iterator[str]:
    """An HTTP server that sends the first second of an MPEG-TS and then goes silent, connection open."""
    ts = io.BytesIO()
    with av.open(str(bikes_path)) as src, av.open(ts, "w", format="mpegts") as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        packets = [p for p in src.demux(src.streams.video[0]) if p.dts is not None][:25]  # 1 s at 25 fps
        for packet in packets:
            packet.stream = out
            dst.mux(packet)
    payload, quiet = ts.getvalue(), threading.Event()
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while not quiet.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\n\r\n" + payload)
            threading.Thread(target=lambda c=conn: (quiet.wait(30), c.close()), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/bikes.ts"
    quiet.set()
    server.close()


def test_stalled_stream_reconnects(stalling_http_url: str) -> None:
    policy = RetryPolicy(max_attempts=3, initial_backoff_s=0.05, open_timeout_s=5, stall_timeout_s=1.0)
    started = time.monotonic()
    final, statuses = _run(SourceSpec("stally", stalling_http_url), policy, until="reconnecting")
    assert final == "stopped"
    assert [s[0] for s in statuses] == ["up", "reconnecting"]
    assert "StallError" in statuses[1][2] and "no data for 1.0s" in statuses[1][2]
    assert time.monotonic() - started < 10
