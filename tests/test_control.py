"""Control records: schema + PromptSpec validation, the ordering contract of ControlTable, and the CLI parsing."""

from __future__ import annotations

import json

import pytest

from operators.prompt_spec import PromptSpec
from pipeline.control import ControlOp, ControlTable, _parser, decode_control, encode_control, prompt_from_args
from pipeline.records import RecordError

REFERRING = PromptSpec(task="referring", text="the red square")
CLASSES = PromptSpec(task="generic", classes=("circle", "triangle"))


def _op(op: str, **fields: object) -> ControlOp:
    return ControlOp(op=op, stream_id="cam-1", issued_ts=1.0, **fields)  # type: ignore[arg-type]


def test_round_trip_keeps_every_field() -> None:
    visual = PromptSpec(task="visual", regions=({"box": [1, 2, 30, 40]},), frame_seq=12, adapter="night")
    for op in (_op("add-stream", prompt=REFERRING, source="rtsp://cam"), _op("set-prompt", prompt=visual),
               _op("set-adapter", adapter="night"), _op("remove-stream"), _op("set-prompt", prompt=CLASSES, from_seq=5)):
        assert decode_control(encode_control(op)) == op


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"op": "add-stream"}, "'prompt' is a required property"),
        ({"op": "set-adapter"}, "'adapter' is a required property"),
        ({"op": "pause"}, "is not one of"),
        ({"op": "set-prompt", "prompt": {"task": "referring", "text": " "}}, "needs a non-empty expression"),
        ({"op": "set-prompt", "prompt": {"task": "generic", "classes": []}}, "non-empty class list"),
        ({"op": "set-prompt", "prompt": {"task": "visual", "regions": [{"box": [1, 2, 3, 4], "points": [[1, 2]]}]}},
         "has too many properties"),
        ({"op": "remove-stream", "stream_id": ""}, "should be non-empty"),
    ],
)
def test_bad_records_are_rejected_with_the_field_named(record: dict, message: str) -> None:
    value = {"schema_version": 1, "stream_id": "cam-1", "issued_ts": 1.0} | record
    with pytest.raises(RecordError, match=message):
        decode_control(json.dumps(value).encode())


def test_not_json_is_a_clear_error() -> None:
    with pytest.raises(RecordError, match="not UTF-8 JSON"):
        decode_control(b"\xff{")


def test_prompt_change_applies_from_the_next_frame_or_from_seq() -> None:
    table = ControlTable()
    table.apply(_op("add-stream", prompt=REFERRING))
    assert table.due("cam-1", 0) == [] and table.streams["cam-1"].prompt == REFERRING
    table.apply(_op("set-prompt", prompt=CLASSES, from_seq=10))
    assert table.due("cam-1", 9) == [] and table.streams["cam-1"].prompt == REFERRING
    assert [op.op for op in table.due("cam-1", 10)] == ["set-prompt"]
    assert table.streams["cam-1"].prompt == CLASSES and table.due("cam-1", 11) == []
    table.apply(_op("set-adapter", adapter="night"))
    assert len(table.due("cam-1", 11)) == 1
    prompt = table.streams["cam-1"].prompt
    assert (prompt.task, prompt.classes, prompt.adapter) == ("generic", CLASSES.classes, "night")
    assert prompt.prompt_id != CLASSES.prompt_id  # a new adapter is a new prompt version


def test_visual_prompt_waits_for_its_frame() -> None:
    table = ControlTable()
    table.apply(_op("add-stream", prompt=REFERRING))
    visual = PromptSpec(task="visual", regions=({"points": [[5, 5]]},), frame_seq=20)
    table.apply(_op("set-prompt", prompt=visual))
    assert table.due("cam-1", 19) == [] and len(table.due("cam-1", 20)) == 1


def test_remove_and_unknown_streams() -> None:
    table = ControlTable()
    with pytest.raises(RecordError, match="no add-stream"):
        table.apply(_op("set-prompt", prompt=CLASSES))
    table.apply(_op("add-stream", prompt=REFERRING))
    table.apply(_op("remove-stream"))
    assert "cam-1" not in table.streams and "cam-1" in table.removed
    table.apply(_op("add-stream", prompt=CLASSES))
    assert table.streams["cam-1"].prompt == CLASSES and "cam-1" not in table.removed


def test_cli_options_become_a_prompt_spec() -> None:
    args = _parser().parse_args(
        ["set-prompt", "--bootstrap", "x:1", "--stream", "cam", "--task", "visual", "--box", "1,2,30,40",
         "--frame", "7", "--adapter", "night"]
    )
    prompt = prompt_from_args(args)
    assert (prompt.task, prompt.frame_seq, prompt.adapter) == ("visual", 7, "night")
    assert prompt.regions[0].box == (1.0, 2.0, 30.0, 40.0)
    args = _parser().parse_args(["add-stream", "--bootstrap", "x:1", "--stream", "cam", "--task", "generic",
                                 "--classes", "circle, square"])
    assert prompt_from_args(args).classes == ("circle", "square")
