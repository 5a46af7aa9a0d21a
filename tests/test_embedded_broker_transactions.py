"""Where the embedded broker (tansu 0.6.0) differs from Apache Kafka on transactions, pinned here so the caveat in
docs/kafka.md stays true: if a tansu upgrade fixes one of these, its test fails and the caveat must change.

Apache Kafka would hide the records of an aborted or fenced transaction from read_committed readers and report
the last stable offset as the read_committed end offset; tansu does neither.
"""

from __future__ import annotations

import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from pipeline.broker import EmbeddedBroker, consumer_config, producer_config

pytestmark = pytest.mark.integration


def _committed_values(bootstrap: str, topic: str, idle_s: float = 2.0) -> list[bytes]:
    """What a read_committed reader sees of ``topic`` partition 0, from the start, until idle for ``idle_s``."""
    consumer = KafkaConsumer(**consumer_config(bootstrap, None), consumer_timeout_ms=int(idle_s * 1000))
    consumer.assign([TopicPartition(topic, 0)])
    consumer.seek_to_beginning()
    try:
        return [record.value for record in consumer]
    finally:
        consumer.close()


def _transactional_producer(bootstrap: str, transactional_id: str) -> KafkaProducer:
    producer = KafkaProducer(**producer_config(bootstrap, transactional_id=transactional_id))
    producer.init_transactions()
    return producer


def test_aborted_transactions_stay_visible_to_read_committed(kafka_broker: EmbeddedBroker) -> None:
    bootstrap, topic = kafka_broker.bootstrap, "quirk-abort"
    kafka_broker.create_topics([topic])
    producer = _transactional_producer(bootstrap, "quirk-abort")
    try:
        producer.begin_transaction()
        producer.send(topic, b"aborted")
        producer.flush()  # on the broker before the abort (unsent records are simply dropped)
        producer.abort_transaction()
        producer.begin_transaction()
        producer.send(topic, b"committed")
        producer.commit_transaction()
    finally:
        producer.close()
    assert _committed_values(bootstrap, topic) == [b"aborted", b"committed"]  # Apache Kafka: [b"committed"]


def test_a_fenced_transaction_shows_its_records_and_drops_its_offsets(kafka_broker: EmbeddedBroker) -> None:
    """A producer dies with a transaction open (records and consumed offsets sent); its successor with the same
    transactional id fences it: the records become visible, the group's committed offset does not move."""
    bootstrap, source, sink, group = kafka_broker.bootstrap, "quirk-fence-in", "quirk-fence-out", "quirk-fence"
    kafka_broker.create_topics([source, sink])
    consumer = KafkaConsumer(**consumer_config(bootstrap, group, **EmbeddedBroker.GROUP_OVERRIDES))
    dead = _transactional_producer(bootstrap, "quirk-fence")
    successor = None
    try:
        consumer.subscribe([source])
        deadline = time.monotonic() + 30
        while not consumer.assignment() and time.monotonic() < deadline:
            consumer.poll(timeout_ms=200)
        partition = TopicPartition(source, 0)
        assert consumer.assignment() == {partition}
        dead.begin_transaction()
        dead.send(sink, b"left open")
        dead.send_offsets_to_transaction({partition: OffsetAndMetadata(5, "", -1)}, consumer.group_metadata())
        dead.flush()
        assert _committed_values(bootstrap, sink) == []  # open: hidden, as Apache Kafka would
        successor = _transactional_producer(bootstrap, "quirk-fence")
        assert _committed_values(bootstrap, sink) == [b"left open"]  # Apache Kafka: [] (aborted by the fence)
        assert consumer.committed(partition) is None
    finally:
        for client in (successor, dead, consumer):
            if client is not None:
                client.close()


def test_read_committed_end_offset_is_zero_while_a_transaction_is_open(kafka_broker: EmbeddedBroker) -> None:
    bootstrap, topic = kafka_broker.bootstrap, "quirk-end-offset"
    kafka_broker.create_topics([topic])
    partition = TopicPartition(topic, 0)
    producer = _transactional_producer(bootstrap, "quirk-end-offset")
    readers = {
        level: KafkaConsumer(**consumer_config(bootstrap, None, isolation_level=level))
        for level in ("read_committed", "read_uncommitted")
    }
    try:
        producer.begin_transaction()
        producer.send(topic, b"committed")
        producer.commit_transaction()  # one record and a commit marker: offsets 0 and 1
        committed_end = readers["read_committed"].end_offsets([partition])[partition]
        producer.begin_transaction()
        producer.send(topic, b"open")
        producer.flush()
        ends = {level: reader.end_offsets([partition])[partition] for level, reader in readers.items()}
        producer.commit_transaction()
    finally:
        producer.close()
        for reader in readers.values():
            reader.close()
    assert committed_end == 2
    assert ends == {"read_committed": 0, "read_uncommitted": 3}  # Apache Kafka: read_committed 2 (the stable offset)
