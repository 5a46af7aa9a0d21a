"""The control topic: add / remove streams, change prompts and LoRA adapters at run time, without a restart.

Ordering contract (what a platform engineer needs to reason about a prompt change):

* Control records are keyed by stream id, so the operations of one stream stay in order.
* Every router reads the *whole* control topic (no consumer group: each one needs every stream's
  configuration, because partition reassignment can hand it any stream). It replays the topic at
  start-up and, after fetching each frames batch and before taking it, reads the topic to its end.
  So an operation the broker acknowledged before a frame was fetched applies to that frame and every
  later one (``hyperseg-stream control`` waits for the acknowledgement): in effect, from the next
  frame. With ``from_seq`` it applies from frame ``from_seq`` on (earlier frames keep the previous
  prompt, even when they are taken later); a visual prompt applies from the frame it was drawn on.
* ``set-prompt`` replaces the prompt and resets the temporal state that belonged to the old one.

``hyperseg-stream control add-stream|remove-stream|set-prompt|set-adapter`` produces these records.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from kafka import KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord

from operators.prompt_spec import PromptError, PromptSpec
from pipeline.broker import producer_config
from pipeline.records import SCHEMA_VERSION, RecordError, decode_record, encode_record, json_headers
from pipeline.topic_reader import TopicReader

log = logging.getLogger(__name__)

ControlOpName = Literal["add-stream", "remove-stream", "set-prompt", "set-adapter"]
OPS: tuple[str, ...] = ("add-stream", "remove-stream", "set-prompt", "set-adapter")
CONTROL_TOPIC = "control"


@dataclass(frozen=True)
class ControlOp:
    """One parsed, validated control record."""

    op: ControlOpName
    stream_id: str
    issued_ts: float
    prompt: PromptSpec | None = None
    adapter: str | None = None
    from_seq: int | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        if self.op in ("add-stream", "set-prompt") and self.prompt is None:
            raise RecordError(f"control {self.op} needs a prompt")
        if self.op == "set-adapter" and not self.adapter:
            raise RecordError("control set-adapter needs an adapter name")

    @property
    def effective_seq(self) -> int | None:
        """First frame the operation applies to: ``from_seq``, else a visual prompt's frame, else None (next)."""
        if self.from_seq is not None:
            return self.from_seq
        return None if self.prompt is None else self.prompt.frame_seq

    def to_record(self) -> dict[str, Any]:
        """The JSON value (validated by :func:`encode_control`)."""
        record: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "op": self.op,
            "stream_id": self.stream_id,
            "issued_ts": self.issued_ts,
        }
        # Through JSON once so tuples become the arrays the schema describes.
        prompt = None if self.prompt is None else json.loads(json.dumps(self.prompt.to_dict()))
        optional = {"prompt": prompt, "adapter": self.adapter, "from_seq": self.from_seq, "source": self.source}
        record.update({name: value for name, value in optional.items() if value is not None})
        return record


def encode_control(op: ControlOp) -> bytes:
    """Validate (schema + PromptSpec rules) and serialise a control operation as the Kafka value."""
    return encode_record(op.to_record(), "control_record")


def decode_control(value: bytes) -> ControlOp:
    """Parse a control-topic value; RecordError names what is wrong."""
    record = decode_record(value, "control_record")
    try:
        prompt = None if record.get("prompt") is None else PromptSpec.from_dict(record["prompt"])
    except PromptError as exc:
        raise RecordError(f"control prompt: {exc}") from exc
    return ControlOp(
        op=record["op"],
        stream_id=record["stream_id"],
        issued_ts=float(record["issued_ts"]),
        prompt=prompt,
        adapter=record.get("adapter"),
        from_seq=record.get("from_seq"),
        source=record.get("source"),
    )


@dataclass
class StreamConfig:
    """What the control topic says about one stream: its current prompt (adapter included), changes not yet due."""

    prompt: PromptSpec
    pending: list[ControlOp] = field(default_factory=list)


class ControlTable:
    """Every stream's configuration, built by applying control operations in topic order.

    Operations with a future ``effective_seq`` wait in ``pending`` until the router reaches that frame
    (:meth:`due`); the others apply at once. The router asks :meth:`due` before submitting each frame.
    """

    def __init__(self) -> None:
        self.streams: dict[str, StreamConfig] = {}
        self.removed: set[str] = set()

    def apply(self, op: ControlOp) -> None:
        """Record an operation (add-stream and remove-stream act at once; prompt/adapter changes may wait)."""
        if op.op == "add-stream":
            assert op.prompt is not None  # checked by ControlOp
            self.removed.discard(op.stream_id)
            self.streams[op.stream_id] = StreamConfig(op.prompt)
        elif op.op == "remove-stream":
            self.streams.pop(op.stream_id, None)
            self.removed.add(op.stream_id)
        elif op.stream_id in self.streams:
            self.streams[op.stream_id].pending.append(op)
        else:
            raise RecordError(f"control {op.op} for stream {op.stream_id!r}, which no add-stream configured")

    def due(self, stream_id: str, seq: int) -> list[ControlOp]:
        """Pop the pending changes of a stream that apply to frame ``seq``, updating its configuration."""
        config = self.streams.get(stream_id)
        if config is None or not config.pending:
            return []
        ready = [op for op in config.pending if op.effective_seq is None or op.effective_seq <= seq]
        config.pending = [op for op in config.pending if op not in ready]
        for op in ready:
            if op.op == "set-prompt" and op.prompt is not None:
                config.prompt = op.prompt
            elif op.adapter is not None:  # set-adapter: same prompt, new adapter, new prompt id
                config.prompt = replace(config.prompt, adapter=op.adapter, prompt_id="")
        return ready


class ControlReader:
    """Reads every partition of the control topic from the beginning: :meth:`catch_up` replays up to the
    current end, :meth:`poll` returns what is new; malformed records are logged and skipped."""

    def __init__(self, bootstrap: str, topic: str = CONTROL_TOPIC, **consumer_overrides: Any) -> None:
        self._reader = TopicReader(bootstrap, topic, **consumer_overrides)

    def poll(self, timeout_ms: int = 0) -> list[ControlOp]:
        return self._decode(self._reader.poll(timeout_ms))

    def catch_up(self, timeout_s: float = 10.0) -> list[ControlOp]:
        return self._decode(self._reader.read_to_end(timeout_s))

    @staticmethod
    def _decode(records: list[ConsumerRecord]) -> list[ControlOp]:
        ops: list[ControlOp] = []
        for record in records:
            try:
                ops.append(decode_control(record.value))
            except RecordError as exc:
                log.error("control offset %d skipped: %s", record.offset, exc)
        return ops

    def close(self) -> None:
        self._reader.close()


def send_control(bootstrap: str, ops: Sequence[ControlOp], topic: str = CONTROL_TOPIC) -> None:
    """Produce control operations keyed by stream id and wait until the broker has them."""
    producer = KafkaProducer(**producer_config(bootstrap))
    try:
        for op in ops:
            producer.send(topic, key=op.stream_id.encode("utf-8"), value=encode_control(op), headers=json_headers())
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)


def prompt_from_args(args: argparse.Namespace) -> PromptSpec:
    """The PromptSpec from the CLI's --task / --text / --classes / --box / --points / --frame / --adapter."""
    regions: list[dict[str, Any]] = []
    if args.box:
        regions.append({"box": [float(v) for v in args.box.split(",")]})
    if args.points:
        regions.append({"points": [[float(v) for v in pair.split(",")] for pair in args.points.split(";")]})
    data: dict[str, Any] = {"task": args.task, "text": args.text or "", "regions": regions, "frame_seq": args.frame}
    if args.classes:
        data["classes"] = [name.strip() for name in args.classes.split(",") if name.strip()]
    if args.adapter:
        data["adapter"] = args.adapter
    return PromptSpec.from_dict(data)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hyperseg-stream control", description="Send a control operation.")
    parser.add_argument("op", choices=OPS)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", default=CONTROL_TOPIC)
    parser.add_argument("--stream", required=True, help="stream id (the frames-topic key)")
    parser.add_argument("--task", choices=["referring", "reasoning", "generic", "visual", "vis"])
    parser.add_argument("--text", help="referring / reasoning expression")
    parser.add_argument("--classes", help="generic / vis: comma-separated class names")
    parser.add_argument("--frame", type=int, help="visual: sequence number of the frame the region is drawn on")
    parser.add_argument("--box", help="visual: x0,y0,x1,y1")
    parser.add_argument("--points", help="visual: x,y;x,y;...")
    parser.add_argument("--adapter", help="LoRA adapter name")
    parser.add_argument("--from-seq", type=int, help="apply from this frame sequence number on")
    parser.add_argument("--source", help="add-stream: the source url (informational)")
    return parser


def control_main(argv: list[str]) -> int:
    """CLI entry (``hyperseg-stream control``): validate, produce, print the record sent."""
    parser = _parser()
    args = parser.parse_args(argv)
    needs_prompt = args.op in ("add-stream", "set-prompt")
    if needs_prompt and not args.task:
        parser.error(f"{args.op} needs --task")
    try:
        op = ControlOp(
            op=args.op,
            stream_id=args.stream,
            issued_ts=time.time(),
            prompt=prompt_from_args(args) if needs_prompt else None,
            adapter=args.adapter if args.op == "set-adapter" else None,
            from_seq=args.from_seq,
            source=args.source,
        )
        value = encode_control(op)
    except (RecordError, PromptError) as exc:
        parser.error(str(exc))
    send_control(args.bootstrap, [op], args.topic)
    print(value.decode("utf-8"))
    return 0
