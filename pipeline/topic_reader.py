"""Read a whole topic (every partition, from the beginning) without a consumer group: for logs that every
reader needs in full (control operations, stream checkpoints) and for subscribers that only watch."""

from __future__ import annotations

import time
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from pipeline.broker import consumer_config


def _assign_all(consumer: KafkaConsumer, topic: str) -> list[TopicPartition]:
    """Assign every partition of ``topic`` from its beginning; RuntimeError if the topic does not exist."""
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        raise RuntimeError(f"topic {topic!r} does not exist")
    assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(assigned)
    consumer.seek_to_beginning()
    return assigned


class TopicReader:
    """A read_committed consumer on all of one topic; :meth:`poll` for what is new, :meth:`read_to_end` to
    catch up with everything written before the call."""

    def __init__(self, bootstrap: str, topic: str, **consumer_overrides: Any) -> None:
        self.topic = topic
        self._consumer = KafkaConsumer(**consumer_config(bootstrap, None, **consumer_overrides))
        try:
            self._partitions = _assign_all(self._consumer, topic)
        except RuntimeError:
            self._consumer.close()
            raise

    def poll(self, timeout_ms: int = 0) -> list[ConsumerRecord]:
        return [record for records in self._consumer.poll(timeout_ms=timeout_ms).values() for record in records]

    def read_to_end(self, timeout_s: float = 10.0) -> list[ConsumerRecord]:
        """Every record up to the end offsets as of now."""
        end = self._consumer.end_offsets(self._partitions)
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout_s
        while any(self._consumer.position(tp) < end[tp] for tp in self._partitions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {self.topic!r} not read to its end within {timeout_s}s")
            records += self.poll(timeout_ms=200)
        return records

    def close(self) -> None:
        self._consumer.close()
