"""How the router's outputs reach Kafka: at-least-once or exactly-once (transactions).

The *router* publishes the mask records, not the per-stream actors: in exactly-once mode the producer that
sends the masks must be the one that commits the consumed frame offsets in the same transaction
(``send_offsets_to_transaction``), and only the router owns the consumer those offsets belong to. The same
holds for at-least-once, where an offset may be committed only after the masks of every frame before it were
acknowledged by the broker.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import RebalanceInProgressError
from kafka.structs import OffsetAndMetadata

from pipeline.broker import producer_config

log = logging.getLogger(__name__)

DeliveryMode = Literal["at-least-once", "exactly-once"]
DELIVERY_MODES: tuple[str, ...] = ("at-least-once", "exactly-once")


@dataclass
class OffsetTracker:
    """Per partition, the consumed offsets in order and whether each one's outputs are safely in Kafka.

    The committable position of a partition is one past the longest fully-acknowledged prefix, so a crash
    re-delivers every frame whose mask might not have reached the broker (at-least-once).
    """

    pending: dict[TopicPartition, deque[list[Any]]] = field(default_factory=dict)
    # Offsets popped for a commit the group refused while rebalancing; they go out with the next commit.
    deferred: dict[TopicPartition, OffsetAndMetadata] = field(default_factory=dict)

    def add(self, tp: TopicPartition, offset: int) -> list[Any]:
        """Register a consumed offset; returns its mutable [offset, done] cell."""
        cell = [offset, False]
        self.pending.setdefault(tp, deque()).append(cell)
        return cell

    def committable(self) -> dict[TopicPartition, OffsetAndMetadata]:
        """Pop the done prefix of each partition; the offsets to commit (one past the last done), including
        any deferred ones that no later offset supersedes."""
        offsets, self.deferred = self.deferred, {}
        for tp, cells in self.pending.items():
            last = None
            while cells and cells[0][1]:
                last = cells.popleft()[0]
            if last is not None:
                offsets[tp] = OffsetAndMetadata(last + 1, "", -1)
        return offsets

    def defer(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        """Keep offsets whose commit failed for the next ``committable`` (the furthest one per partition)."""
        for tp, meta in offsets.items():
            if tp not in self.deferred or self.deferred[tp].offset < meta.offset:
                self.deferred[tp] = meta

    def forget(self, partitions: list[TopicPartition]) -> None:
        """The partitions left this consumer: their offsets are another owner's to commit."""
        for tp in partitions:
            self.pending.pop(tp, None)
            self.deferred.pop(tp, None)

    @property
    def outstanding(self) -> int:
        return sum(len(cells) for cells in self.pending.values())


class Publisher:
    """Sends records and commits consumed offsets under one delivery mode.

    at-least-once: records are sent as they complete; an offset is committed (``commit``) once every
    record before it was acknowledged. exactly-once: ``begin`` opens a transaction; ``commit`` adds the
    consumed offsets to it and commits it, so the masks and the offsets become visible together.
    """

    def __init__(
        self,
        bootstrap: str,
        consumer: KafkaConsumer,
        mode: DeliveryMode,
        transactional_id: str | None,
        **producer_overrides: Any,
    ) -> None:
        if mode not in DELIVERY_MODES:
            raise ValueError(f"delivery mode must be one of {DELIVERY_MODES}, got {mode!r}")
        if mode == "exactly-once" and not transactional_id:
            raise ValueError("exactly-once delivery needs a transactional id")
        self.mode = mode
        self.consumer = consumer
        self.tracker = OffsetTracker()
        extra = {"transactional_id": transactional_id} if mode == "exactly-once" else {}
        self.producer = KafkaProducer(**producer_config(bootstrap, **extra, **producer_overrides))
        if mode == "exactly-once":
            # Aborts what an earlier incarnation with the same id left open and fences it off.
            self.producer.init_transactions()
        self._in_transaction = False

    @property
    def transactional(self) -> bool:
        return self.mode == "exactly-once"

    def begin(self) -> None:
        """Open a transaction if none is open (exactly-once; a no-op otherwise). Opened as late as possible,
        when the first output is ready, so a crash while frames are processed leaves nothing half-written."""
        if self.transactional and not self._in_transaction:
            self.producer.begin_transaction()
            self._in_transaction = True

    def send(self, topic: str, key: bytes, value: bytes | None, headers: list[tuple[str, bytes]], cell: list[Any] | None) -> None:
        """Send one record (opening a transaction if none is open); ``cell`` (from the tracker) is marked done
        once the broker acknowledged it."""
        self.begin()
        future = self.producer.send(topic, key=key, value=value, headers=headers)
        if cell is not None:
            if self.transactional:
                cell[1] = True  # made durable (or discarded) by the transaction as a whole
            else:
                future.add_callback(lambda _meta: cell.__setitem__(1, True))
                future.add_errback(lambda exc: log.error("record to %s not delivered: %s", topic, exc))

    def commit(self) -> None:
        """Commit what is safe: the acknowledged offsets (at-least-once) or the open transaction."""
        if self.transactional:
            if not self._in_transaction:
                return
            offsets = self.tracker.committable()
            if offsets:
                self.producer.send_offsets_to_transaction(offsets, self.consumer.group_metadata())
            self.producer.commit_transaction()
            self._in_transaction = False
        else:
            offsets = self.tracker.committable()
            if offsets:
                try:
                    self.consumer.commit(offsets)
                except RebalanceInProgressError:
                    # Not an error: the consumer rejoins in its next poll(), and a partition that moves away is
                    # handed over (and committed) in the revoke callback first.
                    log.info("offset commit deferred: the group is rebalancing")
                    self.tracker.defer(offsets)

    def flush(self) -> None:
        """Wait until every record sent so far is acknowledged."""
        self.producer.flush(timeout=60)

    def abort(self) -> None:
        """Drop the open transaction (exactly-once); its frames are consumed again after a restart."""
        if self.transactional and self._in_transaction:
            self.producer.abort_transaction()
            self._in_transaction = False

    def close(self) -> None:
        self.abort()
        self.producer.close(timeout=10)
