"""Mask / status records and the Kafka header conventions shared by every topic.

Values are compact UTF-8 JSON validated against the versioned schemas in
``pipeline/schemas``; routing metadata (schema version, content type, sequence,
capture time, codec) travels in headers so consumers can filter without parsing
the payload. Header values are bytes (Kafka's wire type), written as UTF-8 text.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal

import jsonschema
import numpy as np

from operators.rle import encode_rle, mask_bbox

SCHEMA_VERSION = 1
JSON_CONTENT_TYPE = "application/json"
#: Frame payload codec -> content type header value.
FRAME_CONTENT_TYPES = {"jpeg": "image/jpeg", "h264": "video/h264", "hevc": "video/h265"}

RecordKind = Literal["mask_record", "stream_status", "control_record"]
Headers = list[tuple[str, bytes]]


class RecordError(ValueError):
    """A record or header set that breaks the schema; the message names the offending field."""


@cache
def _validator(kind: RecordKind) -> jsonschema.Draft202012Validator:
    """Load and check the schema once per kind."""
    text = resources.files("pipeline.schemas").joinpath(f"{kind}.schema.json").read_text("utf-8")
    schema = json.loads(text)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def validate_record(record: Any, kind: RecordKind = "mask_record") -> dict[str, Any]:
    """Return ``record`` if it matches the schema, else raise RecordError listing every violation."""
    errors = sorted(_validator(kind).iter_errors(record), key=lambda e: list(e.absolute_path))
    if errors:
        details = "; ".join(f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors)
        raise RecordError(f"invalid {kind}: {details}")
    return record


def encode_record(record: dict[str, Any], kind: RecordKind = "mask_record") -> bytes:
    """Validate and serialise a record as compact UTF-8 JSON (the Kafka value)."""
    validate_record(record, kind)
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def decode_record(data: bytes, kind: RecordKind = "mask_record") -> dict[str, Any]:
    """Parse and validate a Kafka value; RecordError says whether the JSON or the schema failed."""
    try:
        record = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError) as exc:
        raise RecordError(f"{kind} value is not UTF-8 JSON: {exc}") from exc
    return validate_record(record, kind)


def mask_object(
    mask: np.ndarray, score: float, track_id: int | None = None, label: str | None = None
) -> dict[str, Any]:
    """One entry of ``objects``: RLE and box computed from a binary (H, W) mask."""
    return {
        "track_id": None if track_id is None else int(track_id),
        "label": label,
        "score": float(score),
        "bbox": mask_bbox(mask),
        "rle": encode_rle(mask),
    }


def build_mask_record(
    *,
    stream_id: str,
    frame_seq: int,
    capture_ts: float,
    task: str,
    prompt_id: str,
    model_id: str,
    width: int,
    height: int,
    objects: Sequence[dict[str, Any]],
    publish_ts: float | None = None,
) -> dict[str, Any]:
    """Assemble and validate a mask record; ``publish_ts`` defaults to now."""
    record = {
        "schema_version": SCHEMA_VERSION,
        "stream_id": stream_id,
        "frame_seq": frame_seq,
        "capture_ts": capture_ts,
        "publish_ts": time.time() if publish_ts is None else publish_ts,
        "task": task,
        "prompt_id": prompt_id,
        "model_id": model_id,
        "width": width,
        "height": height,
        "objects": list(objects),
    }
    return validate_record(record, "mask_record")


def build_status_record(stream_id: str, state: str, attempt: int = 0, error: str | None = None) -> dict[str, Any]:
    """A stream state change (up / reconnecting / down / ended) for the status topic."""
    record = {
        "schema_version": SCHEMA_VERSION,
        "stream_id": stream_id,
        "state": state,
        "attempt": attempt,
        "error": error,
        "ts": time.time(),
    }
    return validate_record(record, "stream_status")


def _header_set(content_type: str, **fields: object) -> Headers:
    """Headers common to every record plus the given optional fields (None ones are left out)."""
    headers = [("schema-version", str(SCHEMA_VERSION).encode()), ("content-type", content_type.encode())]
    for name, value in fields.items():
        if value is not None:
            headers.append((name.replace("_", "-"), _header_text(value).encode("utf-8")))
    return headers


def _header_text(value: object) -> str:
    """Bools as 1/0, floats with full precision (repr), the rest as str."""
    if isinstance(value, bool):
        return "1" if value else "0"
    return repr(value) if isinstance(value, float) else str(value)


def frame_headers(seq: int, capture_ts: float, codec: str, keyframe: bool | None = None) -> Headers:
    """Headers of a frames-topic record; ``keyframe`` is set for pass-through (compressed packet) payloads."""
    if codec not in FRAME_CONTENT_TYPES:
        raise RecordError(f"unknown frame codec {codec!r}; expected one of {sorted(FRAME_CONTENT_TYPES)}")
    return _header_set(
        FRAME_CONTENT_TYPES[codec], seq=seq, capture_ts=float(capture_ts), codec=codec, keyframe=keyframe
    )


def mask_headers(seq: int, capture_ts: float) -> Headers:
    """Headers of a masks-topic record (JSON value, same seq / capture-ts as the source frame)."""
    return _header_set(JSON_CONTENT_TYPE, seq=seq, capture_ts=float(capture_ts))


def json_headers() -> Headers:
    """Headers of a JSON record that carries no frame fields (stream status, control)."""
    return _header_set(JSON_CONTENT_TYPE)


@dataclass(frozen=True)
class FrameMeta:
    """Typed view of a frames-topic record's headers."""

    schema_version: int
    content_type: str
    seq: int
    capture_ts: float
    codec: str
    keyframe: bool | None


def parse_frame_headers(headers: Iterable[tuple[str, bytes | None]]) -> FrameMeta:
    """Read frame headers (kafka-python or confluent-kafka form); RecordError names a missing or bad one."""
    raw = {name: (value or b"").decode("utf-8", "replace") for name, value in headers}
    try:
        meta = FrameMeta(
            schema_version=int(raw["schema-version"]),
            content_type=raw["content-type"],
            seq=int(raw["seq"]),
            capture_ts=float(raw["capture-ts"]),
            codec=raw["codec"],
            keyframe=None if "keyframe" not in raw else raw["keyframe"] == "1",
        )
    except KeyError as exc:
        raise RecordError(f"frame record lacks header {exc.args[0]!r}; has {sorted(raw)}") from exc
    except ValueError as exc:
        raise RecordError(f"frame record has a malformed header: {exc}") from exc
    if meta.schema_version != SCHEMA_VERSION:
        raise RecordError(f"frame schema-version {meta.schema_version} is not supported (expected {SCHEMA_VERSION})")
    return meta
