"""Offset bookkeeping of at-least-once delivery: commit only past the longest acknowledged prefix."""

from kafka import TopicPartition

from pipeline.delivery import OffsetTracker

A, B = TopicPartition("frames", 0), TopicPartition("frames", 1)


def test_commits_stop_at_the_first_unacknowledged_offset() -> None:
    tracker = OffsetTracker()
    cells = [tracker.add(A, offset) for offset in (10, 11, 12)]
    other = tracker.add(B, 5)
    assert tracker.committable() == {}
    cells[1][1] = True  # 11 acknowledged before 10: nothing is safe yet
    assert tracker.committable() == {}
    cells[0][1] = True
    other[1] = True
    committed = tracker.committable()
    assert {tp: meta.offset for tp, meta in committed.items()} == {A: 12, B: 6}  # next offset to read
    assert tracker.outstanding == 1 and tracker.committable() == {}
    cells[2][1] = True
    assert tracker.committable()[A].offset == 13 and tracker.outstanding == 0


def test_forgotten_partitions_are_not_committed() -> None:
    tracker = OffsetTracker()
    tracker.add(A, 0)[1] = True
    tracker.forget([A])
    assert tracker.committable() == {} and tracker.outstanding == 0


def test_a_deferred_commit_goes_out_with_the_next_one() -> None:
    """A commit refused during a rebalance is retried: the next commit carries it, unless a later offset of the
    same partition supersedes it or the partition moved away."""
    tracker = OffsetTracker()
    tracker.add(A, 0)[1] = True
    tracker.add(B, 0)[1] = True
    refused = tracker.committable()
    tracker.defer(refused)
    tracker.add(A, 1)[1] = True
    again = tracker.committable()
    assert {tp: meta.offset for tp, meta in again.items()} == {A: 2, B: 1}
    assert tracker.committable() == {}
    tracker.defer(again)
    tracker.forget([B])
    assert {tp: meta.offset for tp, meta in tracker.committable().items()} == {A: 2}
