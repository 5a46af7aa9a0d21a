"""Per-stream state checkpoints on a compacted Kafka topic keyed by stream id.

When a partition moves to another router, the router giving it up writes each of its streams' state
here, and the router taking it over reads the latest value of the stream's key before the stream's
first frame, so the temporal memory (prompt ring, tracker) survives the move. Kafka keeps the state
as durable as the frames themselves, and compaction keeps only the newest checkpoint per stream.
"""

from __future__ import annotations

from typing import Any

from pipeline.delivery import Publisher
from pipeline.topic_reader import TopicReader

#: Header marking a state record; lets a reader tell it from any stray record on the topic.
STATE_HEADERS = [("content-type", b"application/x-hyperseg-stream-state")]


class StreamStateStore:
    """Latest checkpoint of every stream, read from the state topic; writes go through the router's publisher
    (so in exactly-once mode they join its transaction)."""

    def __init__(self, bootstrap: str, topic: str, **consumer_overrides: Any) -> None:
        self.topic = topic
        self._reader = TopicReader(bootstrap, topic, **consumer_overrides)
        self._latest: dict[str, bytes | None] = {}

    def refresh(self, timeout_s: float = 10.0) -> None:
        """Read the topic up to its current end (called when partitions are assigned)."""
        for record in self._reader.read_to_end(timeout_s):
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
        self._reader.close()
