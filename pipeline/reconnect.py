"""Keep one source connected: exponential back-off, stall detection, and a final verdict.

A camera that stays down past ``max_attempts`` consecutive failures is reported
("down") through the status callback rather than silently dropped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import av

from pipeline.sources import Frame, Packet, SourceConfigError, SourceSpec, StallError, open_source, read_connection

StreamState = Literal["up", "reconnecting", "down", "ended"]
FinalState = Literal["down", "ended", "stopped"]
StatusCallback = Callable[[StreamState, int, "str | None"], None]


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: ``max_attempts`` consecutive failures (each followed by a back-off) before "down"."""

    max_attempts: int = 5
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    open_timeout_s: float = 10.0
    stall_timeout_s: float = 5.0

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failure number ``attempt`` (1-based): doubles, capped."""
        return min(self.max_backoff_s, self.initial_backoff_s * 2 ** (attempt - 1))


def supervise(
    spec: SourceSpec,
    policy: RetryPolicy,
    passthrough: bool,
    on_item: Callable[[Frame | Packet], None],
    on_status: StatusCallback,
    stop: threading.Event,
) -> FinalState:
    """Feed ``spec``'s items to ``on_item`` until the source ends, gives up, or ``stop`` is set."""
    attempt = 0
    while not stop.is_set():
        got_items = False
        try:
            with open_source(spec, policy.open_timeout_s, policy.stall_timeout_s) as container:
                for item in read_connection(container, spec, passthrough, policy.stall_timeout_s):
                    if not got_items:
                        got_items, attempt = True, 0
                        on_status("up", 0, None)
                    on_item(item)
                    if stop.is_set():
                        return "stopped"
            if got_items and spec.loop:
                continue
            if not spec.is_live:
                on_status("ended", 0, None)
                return "ended"
            error = "stream ended"
        except SourceConfigError as exc:
            on_status("down", attempt, str(exc))
            return "down"
        except (av.FFmpegError, OSError, StallError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        attempt += 1
        if attempt >= policy.max_attempts:
            on_status("down", attempt, error)
            return "down"
        on_status("reconnecting", attempt, error)
        stop.wait(policy.backoff(attempt))
    return "stopped"
