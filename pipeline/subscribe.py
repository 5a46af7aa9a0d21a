"""`hyperseg-stream subscribe`: read mask records from Kafka, print or save them, render an overlay video.

The overlay needs the pixels the masks belong to: either the source file (decoded in order, so frame
``seq`` is the ``seq``-th decoded frame, as ingest numbers them without ``--fps``) or the frames topic
itself (``--frames-topic``: works for any source, live cameras included, since ingest put the JPEGs there).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import av
import numpy as np

from operators.frame_codec import decode_jpeg
from operators.overlay import Mp4Writer, draw_overlay
from operators.rle import decode_rle
from pipeline.records import RecordError, decode_record, parse_frame_headers
from pipeline.topic_reader import TopicReader

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecodedObject:
    """One object of a mask record with its mask decoded."""

    mask: np.ndarray
    label: str | None
    score: float
    track_id: int | None


def decode_objects(record: dict[str, Any]) -> list[DecodedObject]:
    """Decode every object's COCO RLE (pycocotools) into an (H, W) bool mask."""
    return [
        DecodedObject(decode_rle(obj["rle"]), obj["label"], float(obj["score"]), obj["track_id"])
        for obj in record["objects"]
    ]


def describe(record: dict[str, Any]) -> str:
    """One printable line: stream, seq, latency and the objects found."""
    latency_ms = 1000 * (record["publish_ts"] - record["capture_ts"])
    objects = ", ".join(
        f"{obj['label'] or 'object'}#{obj['track_id']} {obj['score']:.2f} {obj['bbox']}" for obj in record["objects"]
    )
    return (
        f"{record['stream_id']} seq={record['frame_seq']} task={record['task']} "
        f"latency={latency_ms:.0f}ms objects=[{objects}]"
    )


def iter_mask_records(
    bootstrap: str,
    topic: str = "masks",
    stream_id: str | None = None,
    idle_timeout_s: float | None = None,
    stop: threading.Event | None = None,
) -> Iterator[dict[str, Any]]:
    """Validated mask records of ``topic`` (read_committed, from the beginning), optionally of one stream.

    Ends when ``stop`` is set or nothing new arrived for ``idle_timeout_s`` (None: never).
    """
    reader = TopicReader(bootstrap, topic)
    try:
        key = None if stream_id is None else stream_id.encode("utf-8")
        last_new = time.monotonic()
        while not (stop is not None and stop.is_set()):
            if idle_timeout_s is not None and time.monotonic() - last_new > idle_timeout_s:
                return
            messages = reader.poll(timeout_ms=200)
            if messages:
                last_new = time.monotonic()
            for message in messages:
                if key is not None and message.key != key:
                    continue
                try:
                    yield decode_record(message.value)
                except RecordError as exc:
                    log.error("%s offset %d skipped: %s", topic, message.offset, exc)
    finally:
        reader.close()


def file_frames(source: str) -> Iterator[tuple[int, np.ndarray]]:
    """(seq, RGB frame) of a file or URL, numbered as ingest numbers them."""
    with av.open(source) as container:
        for seq, frame in enumerate(container.decode(video=0)):
            yield seq, frame.to_ndarray(format="rgb24")


def topic_frames(bootstrap: str, topic: str, stream_id: str, wanted: set[int]) -> Iterator[tuple[int, np.ndarray]]:
    """(seq, RGB frame) of one stream's JPEG records on the frames topic, until every wanted seq was seen."""
    reader = TopicReader(bootstrap, topic)
    try:
        key, remaining = stream_id.encode("utf-8"), set(wanted)
        last_new = time.monotonic()
        while remaining and time.monotonic() - last_new < 5.0:
            messages = reader.poll(timeout_ms=200)
            if messages:
                last_new = time.monotonic()
            for message in messages:
                meta = parse_frame_headers(message.headers)
                if message.key == key and meta.seq in remaining and meta.codec == "jpeg":
                    remaining.discard(meta.seq)
                    yield meta.seq, decode_jpeg(message.value)
    finally:
        reader.close()


def render_overlay(
    records: list[dict[str, Any]], frames: Iterator[tuple[int, np.ndarray]], out_path: str | Path, fps: int = 10
) -> int:
    """Write the frames that have a mask record, masks drawn over them; returns how many were written."""
    by_seq = {record["frame_seq"]: record for record in records}
    written = 0
    with Mp4Writer(out_path, fps=fps) as writer:
        for seq, frame in frames:
            record = by_seq.get(seq)
            if record is None:
                continue
            objects = decode_objects(record)
            masks = np.stack([o.mask for o in objects]) if objects else np.zeros((0, *frame.shape[:2]), bool)
            captions = [f"{o.label + ' ' if o.label else ''}{o.score:.2f}" for o in objects]
            colours = [o.track_id if o.track_id is not None else i for i, o in enumerate(objects)]
            writer.write(draw_overlay(frame, masks, captions, colours))
            written += 1
    return written


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hyperseg-stream subscribe", description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", default="masks")
    parser.add_argument("--stream", help="only this stream id")
    parser.add_argument("--save", help="append the records to this JSON-lines file")
    parser.add_argument("--quiet", action="store_true", help="do not print a line per record")
    parser.add_argument("--max-records", type=int, help="stop after this many records")
    parser.add_argument("--idle-timeout", type=float, help="stop after this many seconds without a record")
    parser.add_argument("--overlay", help="write an overlay MP4 here (needs --stream and --source or --frames-topic)")
    parser.add_argument("--source", help="overlay: the stream's source file or URL")
    parser.add_argument("--frames-topic", help="overlay: take the frames from this Kafka topic instead")
    parser.add_argument("--fps", type=int, default=10, help="overlay video frame rate")
    return parser


def subscribe_main(argv: list[str]) -> int:
    """CLI entry (``hyperseg-stream subscribe``); Ctrl-C stops reading and still writes the overlay."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.overlay and not (args.stream and (args.source or args.frames_topic)):
        parser.error("--overlay needs --stream and one of --source / --frames-topic")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)  # the client's connection chatter
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    kept: list[dict[str, Any]] = []
    save: IO[str] | None = open(args.save, "a", encoding="utf-8") if args.save else None  # noqa: SIM115
    seen = 0
    try:
        for record in iter_mask_records(args.bootstrap, args.topic, args.stream, args.idle_timeout, stop):
            if not args.quiet:
                print(describe(record), flush=True)
            if save is not None:
                save.write(json.dumps(record, separators=(",", ":")) + "\n")
            if args.overlay:
                kept.append(record)
            seen += 1
            if args.max_records is not None and seen >= args.max_records:
                break
    finally:
        if save is not None:
            save.close()
    if args.overlay:
        frames = (
            file_frames(args.source)
            if args.source
            else topic_frames(args.bootstrap, args.frames_topic, args.stream, {r["frame_seq"] for r in kept})
        )
        written = render_overlay(kept, frames, args.overlay, args.fps)
        print(f"overlay: {written} frames -> {args.overlay}", file=sys.stderr)
    return 0
