"""The subscriber: RLE decoding, the CLI's save and overlay, and the README's plain kafka-python consumer snippet."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import av
import numpy as np
import pytest
from kafka import KafkaProducer

from pipeline.broker import EmbeddedBroker, producer_config
from pipeline.demo_clips import write_demo_clip
from pipeline.records import build_mask_record, encode_record, mask_headers, mask_object
from pipeline.subscribe import decode_objects, describe, subscribe_main

DOC = Path(__file__).resolve().parents[1] / "docs" / "kafka.md"
SIZE = 256


def _mask(seq: int) -> np.ndarray:
    """A square that grows with the frame number: its pixel count identifies the frame."""
    mask = np.zeros((SIZE, SIZE), bool)
    mask[10 : 20 + seq, 30 : 40 + seq] = True
    return mask


def _record(stream_id: str, seq: int) -> dict:
    return build_mask_record(stream_id=stream_id, frame_seq=seq, capture_ts=1000.0 + seq, task="referring",
                             prompt_id="p1", model_id="test", width=SIZE, height=SIZE,
                             objects=[mask_object(_mask(seq), 0.75, track_id=0, label="square")],
                             publish_ts=1000.25 + seq)


def test_decode_objects_and_describe() -> None:
    record = _record("cam", 3)
    (obj,) = decode_objects(record)
    assert obj.mask.dtype == bool and np.array_equal(obj.mask, _mask(3))
    assert (obj.label, obj.score, obj.track_id) == ("square", 0.75, 0)
    assert describe(record) == "cam seq=3 task=referring latency=250ms objects=[square#0 0.75 [30, 10, 13, 13]]"


@pytest.fixture(scope="module")
def masks_topic(kafka_broker: EmbeddedBroker) -> str:
    """Four mask records of stream 'clip' and two of 'other' on a fresh topic."""
    topic = "sub-masks"
    kafka_broker.create_topics([topic])
    producer = KafkaProducer(**producer_config(kafka_broker.bootstrap))
    for stream_id, count in (("clip", 4), ("other", 2)):
        for seq in range(count):
            producer.send(topic, key=stream_id.encode(), value=encode_record(_record(stream_id, seq)),
                          headers=mask_headers(seq, 1000.0 + seq))
    producer.flush()
    producer.close()
    return topic


@pytest.mark.integration
def test_docs_consumer_snippet_decodes_masks(kafka_broker: EmbeddedBroker, masks_topic: str) -> None:
    """The ten-line consumer in docs/kafka.md (copied into the README), run as written but for broker and topic."""
    text = DOC.read_text()
    snippet = re.search(r"<!-- consumer-snippet.*?-->\n```python\n(.*?)```", text, re.S).group(1)
    assert len(snippet.strip().splitlines()) <= 11
    code = snippet.replace('"localhost:9092"', repr(kafka_broker.bootstrap)).replace('"masks"', repr(masks_topic))
    code = code.replace("consumer_timeout_ms=10_000", "consumer_timeout_ms=3_000")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(DOC), "exec"), {})  # noqa: S102 - our own documentation
    lines = out.getvalue().splitlines()
    expected = [f"clip {s} square 0.75 {int(_mask(s).sum())}" for s in range(4)]
    expected += [f"other {s} square 0.75 {int(_mask(s).sum())}" for s in range(2)]
    assert lines == expected


@pytest.mark.integration
def test_subscribe_cli_saves_and_renders_an_overlay(
    kafka_broker: EmbeddedBroker, masks_topic: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = write_demo_clip(0, "referring", tmp_path, frames=6)
    saved, video = tmp_path / "clip.jsonl", tmp_path / "overlay.mp4"
    code = subscribe_main(["--bootstrap", kafka_broker.bootstrap, "--topic", masks_topic, "--stream", "clip",
                           "--save", str(saved), "--source", str(clip.path), "--overlay", str(video),
                           "--idle-timeout", "3"])
    assert code == 0
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in printed] == ["seq=0", "seq=1", "seq=2", "seq=3"]
    records = [json.loads(line) for line in saved.read_text().splitlines()]
    assert [(r["stream_id"], r["frame_seq"]) for r in records] == [("clip", s) for s in range(4)]
    with av.open(str(video)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 4 and frames[0].shape == (SIZE, SIZE, 3)
    with av.open(str(clip.path)) as container:
        source = next(container.decode(video=0)).to_ndarray(format="rgb24")
    tinted = _mask(0)
    # The mask is tinted (changed), the rest of the frame is the source as it was.
    assert np.abs(frames[0][tinted].astype(int) - source[tinted]).mean() > 20
    assert np.abs(frames[0][~tinted].astype(int) - source[~tinted]).mean() < 8


def test_overlay_needs_a_stream_and_pixels() -> None:
    with pytest.raises(SystemExit):
        subscribe_main(["--bootstrap", "x:1", "--overlay", "out.mp4"])
