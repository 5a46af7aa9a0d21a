"""Mask / status records against their JSON Schemas, and the Kafka header conventions."""

import json

import jsonschema
import numpy as np
import pytest

from operators.rle import decode_rle
from pipeline.records import (
    RecordError,
    build_mask_record,
    build_status_record,
    decode_record,
    encode_record,
    frame_headers,
    mask_headers,
    mask_object,
    parse_frame_headers,
    validate_record,
)


def _record() -> dict:
    mask = np.zeros((272, 640), bool)
    mask[100:150, 200:260] = True
    return build_mask_record(
        stream_id="cam-1",
        frame_seq=7,
        capture_ts=1700000000.25,
        task="referring",
        prompt_id="p1",
        model_id="hyperseg-tiny",
        width=640,
        height=272,
        objects=[mask_object(mask, 0.9, track_id=3), mask_object(mask, 0.4, label="person")],
        publish_ts=1700000000.5,
    )


def test_schema_files_are_valid_draft_2020_12() -> None:
    from importlib import resources

    for kind in ("mask_record", "stream_status"):
        schema = json.loads(resources.files("pipeline.schemas").joinpath(f"{kind}.schema.json").read_text())
        assert schema["$schema"].endswith("2020-12/schema")
        jsonschema.Draft202012Validator.check_schema(schema)


def test_round_trip_is_compact_json_with_decodable_masks() -> None:
    record = _record()
    data = encode_record(record)
    assert b" " not in data and data.startswith(b'{"schema_version":1')
    back = decode_record(data)
    assert back == record
    assert back["objects"][0]["bbox"] == [200, 100, 60, 50]
    assert decode_rle(back["objects"][0]["rle"]).sum() == 50 * 60


def test_missing_and_wrong_fields_are_named() -> None:
    record = _record()
    del record["model_id"]
    record["objects"][1]["score"] = 1.5
    with pytest.raises(RecordError) as info:
        validate_record(record)
    assert "'model_id' is a required property" in str(info.value)
    assert "objects/1/score" in str(info.value)


def test_unknown_version_and_extra_fields_are_rejected() -> None:
    with pytest.raises(RecordError, match="schema_version"):
        validate_record({**_record(), "schema_version": 2})
    with pytest.raises(RecordError, match="Additional properties"):
        validate_record({**_record(), "surprise": 1})


def test_decode_reports_bad_json_and_bad_records() -> None:
    with pytest.raises(RecordError, match="not UTF-8 JSON"):
        decode_record(b'{"schema_version": 1,')
    with pytest.raises(RecordError, match="required property"):
        decode_record(b'{"schema_version": 1}')


def test_status_record() -> None:
    record = build_status_record("cam-1", "down", 5, "ConnectionRefusedError")
    assert decode_record(encode_record(record, "stream_status"), "stream_status") == record
    with pytest.raises(RecordError, match="state"):
        build_status_record("cam-1", "sleepy")


def test_frame_headers_round_trip() -> None:
    headers = frame_headers(42, 1700000000.123456, "h264", keyframe=True)
    assert all(isinstance(name, str) and isinstance(value, bytes) for name, value in headers)
    meta = parse_frame_headers(headers)
    assert (meta.seq, meta.capture_ts, meta.codec, meta.keyframe) == (42, 1700000000.123456, "h264", True)
    assert meta.content_type == "video/h264" and meta.schema_version == 1
    assert parse_frame_headers(frame_headers(1, 2.0, "jpeg")).keyframe is None


def test_mask_headers() -> None:
    assert dict(mask_headers(3, 1.5)) == {
        "schema-version": b"1",
        "content-type": b"application/json",
        "seq": b"3",
        "capture-ts": b"1.5",
    }


def test_bad_headers_are_named() -> None:
    headers = [h for h in frame_headers(1, 2.0, "jpeg") if h[0] != "capture-ts"]
    with pytest.raises(RecordError, match="capture-ts"):
        parse_frame_headers(headers)
    with pytest.raises(RecordError, match="malformed"):
        parse_frame_headers([*headers, ("capture-ts", b"soon")])
    with pytest.raises(RecordError, match="codec"):
        frame_headers(1, 2.0, "gif")
