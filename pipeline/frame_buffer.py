"""Bounded hand-off between a source reader and its Kafka producer.

Live cameras must never wait on a slow producer (latency would grow without bound),
so they drop the oldest frame; files must not lose frames, so their reader blocks.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, Literal, TypeVar

T = TypeVar("T")
DropPolicy = Literal["block", "drop_oldest"]


class FrameBuffer(Generic[T]):
    """A FIFO of at most ``maxsize`` items with a drop policy and a close signal."""

    def __init__(self, maxsize: int, policy: DropPolicy) -> None:
        if maxsize < 1:
            raise ValueError(f"buffer size must be at least 1, got {maxsize}")
        if policy not in ("block", "drop_oldest"):
            raise ValueError(f"unknown drop policy {policy!r}")
        self._items: deque[T] = deque()
        self._maxsize = maxsize
        self._policy = policy
        self._cond = threading.Condition()
        self._closed = False

    def put(self, item: T) -> int:
        """Add an item; returns how many items were dropped (``block`` waits for room instead).

        After :meth:`close` the item itself is discarded (counted as 1 dropped), so a reader
        blocked on a full buffer is released when the producer side shuts down.
        """
        with self._cond:
            dropped = 0
            while len(self._items) >= self._maxsize and not self._closed:
                if self._policy == "block":
                    self._cond.wait(0.1)
                else:
                    self._items.popleft()
                    dropped += 1
            if self._closed:
                return 1
            self._items.append(item)
            self._cond.notify_all()
            return dropped

    def get(self, timeout: float) -> T | None:
        """Oldest item, or None when nothing arrived within ``timeout`` seconds."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            if not self._items:
                return None
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def full(self) -> bool:
        with self._cond:
            return len(self._items) >= self._maxsize

    def clear(self) -> int:
        """Drop everything queued; returns how many items went."""
        with self._cond:
            count = len(self._items)
            self._items.clear()
            self._cond.notify_all()
            return count

    def close(self) -> None:
        """No more items are accepted; ``drained`` turns true once the queued ones are taken."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def drained(self) -> bool:
        with self._cond:
            return self._closed and not self._items
