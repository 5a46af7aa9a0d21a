"""The topics of one deployment, their names and how they are created (the state topic is compacted)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

#: Largest stream-state checkpoint the router writes (bytes); the broker's message limit must allow it.
STATE_MAX_BYTES = 16 * 2**20


@dataclass(frozen=True)
class TopicLayout:
    """Topic names; one layout per deployment (tests give each test its own)."""

    frames: str = "frames"
    masks: str = "masks"
    control: str = "control"
    state: str = "stream-state"
    status: str = "stream-status"

    @classmethod
    def prefixed(cls, prefix: str) -> TopicLayout:
        """Every name with ``prefix-`` in front (several deployments on one cluster)."""
        return cls(*(f"{prefix}-{name}" for name in (cls.frames, cls.masks, cls.control, cls.state, cls.status)))


def ensure_topics(bootstrap: str, layout: TopicLayout, partitions: int = 1, replication: int = 1) -> None:
    """Create missing topics: frames and masks with ``partitions``, control with one (a single ordered log of
    operations), the state topic compacted so it keeps the latest checkpoint of every stream."""
    specs = [
        NewTopic(layout.frames, partitions, replication),
        NewTopic(layout.masks, partitions, replication),
        NewTopic(layout.control, 1, replication),
        NewTopic(layout.status, 1, replication),
        NewTopic(
            layout.state,
            partitions,
            replication,
            topic_configs={"cleanup.policy": "compact", "max.message.bytes": str(STATE_MAX_BYTES)},
        ),
    ]
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        for spec in specs:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics([spec])
    finally:
        admin.close()
