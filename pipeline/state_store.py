"""Per-stream state checkpoints on a compacted Kafka topic keyed by stream id.

When a partition moves to another router, the router giving it up writes each of its streams' state
here, and the router taking it over reads the latest value of the stream's key before the stream's
first frame, so the temporal memory (prompt ring, tracker) survives the move. Kafka keeps the state
as durable as the frames themselves, and compaction keeps only the newest checkpoint per stream.
"""

from __future__ import annotations

import time
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from pipeline.broker import consumer_config
from pipeline.delivery import Publisher

#: Header marking a state record; lets a reader tell it from any stray record on the topic.
STATE_HEADERS = [("content-type", b"application/x-hyperseg-stream-state")]


class StreamStateStore:
    """Latest checkpoint of every stream, read from the state topic; writes go through the router's publisher
    (so in exactly-once mode they join its transaction)."""

    def __init__(self, bootstrap: str, topic: str, **consumer_overrides: Any) -> None:
        self.topic = topic
        self._consumer = KafkaConsumer(**consumer_config(bootstrap, None, **consumer_overrides))
        partitions = self._consumer.partitions_for_topic(topic)
        if not partitions:
            self._consumer.close()
            raise RuntimeError(f"state topic {topic!r} does not exist on {bootstrap}")
        self._partitions = [TopicPartition(topic, p) for p in sorted(partitions)]
        self._consumer.assign(self._partitions)
        self._consumer.seek_to_beginning()
        self._latest: dict[str, bytes | None] = {}

    def refresh(self, timeout_s: float = 10.0) -> None:
        """Read the topic up to its current end (called when partitions are assigned)."""
        end = self._consumer.end_offsets(self._partitions)
        deadline = time.monotonic() + timeout_s
        while any(self._consumer.position(tp) < end[tp] for tp in self._partitions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"state topic {self.topic!r} not read to its end within {timeout_s}s")
            for records in self._consumer.poll(timeout_ms=200).values():
                for record in records:
                    if record.key is not None:
                        self._latest[record.key.decode("utf-8")] = record.value

    def latest(self, stream_id: str) -> bytes | None:
        """The newest checkpoint of ``stream_id`` seen by the last :meth:`refresh`, or None."""
        return self._latest.get(stream_id)

    def save(self, publisher: Publisher, stream_id: str, state: bytes | None) -> None:
        """Write a checkpoint (None: a tombstone, the stream's state is gone) and remember it locally."""
        self._latest[stream_id] = state
        publisher.send(self.topic, stream_id.encode("utf-8"), state, STATE_HEADERS, None)

    def close(self) -> None:
        self._consumer.close()
