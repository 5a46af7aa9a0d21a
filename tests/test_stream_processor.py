"""StreamProcessor on in-process LocalStages: order, gaps, prompt changes, checkpoints, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from operators.frame_codec import FrameDecodeError, decode_jpeg, encode_jpeg
from operators.local_stages import LocalStages
from operators.prompt_spec import PromptError, PromptSpec, Region
from operators.stream_processor import (
    CheckpointFormatError,
    FrameInput,
    NoPromptError,
    SequenceError,
    StreamProcessor,
)
from operators.synthetic import WorldConfig, make_clip
from pipeline.records import validate_record
from pipeline.stream_actor import StreamWorker

REFER = PromptSpec(task="referring", text="the small green triangle")
CLASSES = PromptSpec(task="generic", classes=("circle", "square", "triangle"), generic_mode="instance")


@pytest.fixture(scope="module")
def stages() -> LocalStages:
    torch.set_num_threads(1)
    return LocalStages.from_checkpoint()


@pytest.fixture(scope="module")
def jpegs() -> list[bytes]:
    clip = make_clip(0, "test", WorldConfig(num_frames=5))
    return [encode_jpeg(frame) for frame in clip.frames]


def frame(jpegs: list[bytes], seq: int, index: int | None = None) -> FrameInput:
    return FrameInput(seq=seq, capture_ts=1000.0 + seq, codec="jpeg", payload=jpegs[seq if index is None else index])


def run(processor: StreamProcessor, jpegs: list[bytes], seqs: list[int]):
    return [processor.process(frame(jpegs, s)) for s in seqs]


def test_results_match_the_video_predictor(stages, jpegs):
    processor = StreamProcessor("cam", stages, stages.model_id, REFER)
    outs = run(processor, jpegs, [0, 1, 2])
    state = None
    for out, payload in zip(outs, jpegs):
        expected, state = stages.predictor.step(decode_jpeg(payload), REFER.to_task_prompt((256, 256), None), state)
        assert np.array_equal(out.masks, expected.masks.numpy())
        assert out.scores == pytest.approx(expected.scores.tolist())
    assert outs[-1].prompt_id == REFER.prompt_id and outs[-1].model_id == stages.model_id
    assert (outs[-1].width, outs[-1].height) == (256, 256) and outs[-1].masks.shape == (1, 256, 256)


def test_sequence_order_is_enforced_and_gaps_counted(stages, jpegs):
    processor = StreamProcessor("cam", stages, stages.model_id, REFER)
    outs = run(processor, jpegs, [0, 1, 4])
    assert [o.gap for o in outs] == [0, 0, 2] and processor.gaps == 2 and processor.frames == 3
    for stale in (4, 2):
        with pytest.raises(SequenceError, match=f"seq {stale} is not after the last processed seq 4"):
            processor.process(frame(jpegs, stale))
    assert processor.last_seq == 4 and processor.frames == 3


def test_prompt_change_applies_from_next_frame_and_resets_state(stages, jpegs):
    processor = StreamProcessor("cam", stages, stages.model_id, REFER)
    run(processor, jpegs, [0, 1])
    assert processor.state.frame_index == 2 and processor.state.prompt_history.shape[0] == 2
    processor.set_prompt(CLASSES.to_dict())
    assert processor.prompt == REFER  # not yet: nothing changes until a frame arrives
    out = processor.process(frame(jpegs, 2))
    assert out.prompt_id == CLASSES.prompt_id and out.task == "generic"
    assert processor.state.frame_index == 1 and processor.state.prompt_history.shape[0] == 1
    fresh = StreamProcessor("other", stages, stages.model_id, CLASSES).process(frame(jpegs, 2))
    assert np.array_equal(out.masks, fresh.masks) and out.labels == fresh.labels


def test_checkpoint_restore_resumes_identically(stages, jpegs):
    uninterrupted = StreamProcessor("cam", stages, stages.model_id, REFER, key_frame_interval=2)
    run(uninterrupted, jpegs, [0, 1, 2])
    blob = uninterrupted.checkpoint()
    assert blob[:4] == b"HSSP" and len(blob) < 64_000
    restored = StreamProcessor.restore(blob, stages)
    assert (restored.last_seq, restored.frames, restored.prompt) == (2, 3, REFER)
    for seq in (3, 4):
        a, b = uninterrupted.process(frame(jpegs, seq)), restored.process(frame(jpegs, seq))
        assert np.array_equal(a.masks, b.masks) and a.scores == b.scores and a.key_frame == b.key_frame
    with pytest.raises(CheckpointFormatError, match="bad magic"):
        StreamProcessor.restore(b"\x80\x04pickle", stages)


def test_key_frames_every_k(stages, jpegs):
    processor = StreamProcessor("cam", stages, stages.model_id, REFER, key_frame_interval=2)
    assert [o.key_frame for o in run(processor, jpegs, [0, 1, 2, 3])] == [True, False, True, False]


def test_garbled_payload_raises_and_leaves_state_alone(stages, jpegs):
    uninterrupted = StreamProcessor("cam", stages, stages.model_id, REFER)
    damaged = StreamProcessor("cam", stages, stages.model_id, REFER)
    run(uninterrupted, jpegs, [0, 1])
    run(damaged, jpegs, [0, 1])
    with pytest.raises(FrameDecodeError, match="not a decodable image"):
        damaged.process(FrameInput(2, 0.0, "jpeg", b"\xff\xd8 garbage"))
    with pytest.raises(FrameDecodeError, match="codec 'png'"):
        FrameInput(2, 0.0, "png", b"")
    assert damaged.last_seq == 1
    a, b = uninterrupted.process(frame(jpegs, 2)), damaged.process(frame(jpegs, 2))
    assert np.array_equal(a.masks, b.masks) and a.scores == b.scores


def test_no_prompt_and_bad_prompts_give_clear_errors(stages, jpegs):
    with pytest.raises(NoPromptError, match="has no prompt"):
        StreamProcessor("cam", stages, stages.model_id).process(frame(jpegs, 0))
    with pytest.raises(PromptError, match="non-empty expression"):
        PromptSpec.from_dict({"task": "referring"})
    with pytest.raises(PromptError, match=r"unknown prompt field\(s\) \['colour'\]"):
        PromptSpec.from_dict({"task": "referring", "text": "x", "colour": "red"})
    with pytest.raises(PromptError, match="x1 >= x0"):
        PromptSpec.from_dict({"task": "visual", "regions": [{"box": [50, 0, 10, 10]}]})
    with pytest.raises(PromptError, match="adapter"):
        PromptSpec(task="referring", text="x", adapter="../etc")
    spec = PromptSpec.from_dict({"task": "visual", "regions": [{"box": [10, 10, 60, 60]}, {"points": [[200, 200]]}],
                                 "frame_seq": 3})
    assert PromptSpec.from_dict(spec.to_dict()) == spec


def test_visual_prompt_applies_from_its_frame(stages, jpegs):
    processor = StreamProcessor("cam", stages, stages.model_id, REFER)
    processor.process(frame(jpegs, 0))
    processor.set_prompt(PromptSpec(task="visual", regions=(Region(box=(10, 10, 60, 60)),), frame_seq=2))
    assert processor.process(frame(jpegs, 1)).task == "referring"
    out = processor.process(frame(jpegs, 2))
    assert out.task == "visual" and out.labels == ["region 0"] and out.masks.shape == (1, 256, 256)
    outside = PromptSpec(task="visual", regions=(Region(box=(900, 900, 950, 950)),))
    processor.set_prompt(outside)
    with pytest.raises(PromptError, match="outside the 256x256 frame"):
        processor.process(frame(jpegs, 3))
    assert processor.process(frame(jpegs, 4)).task == "visual"  # the bad prompt was dropped, the old one stays


def test_worker_returns_schema_valid_records(stages, jpegs):
    worker = StreamWorker("cam", lambda: stages, CLASSES.to_dict())
    record = worker.process(frame(jpegs, 0))
    assert validate_record(record) is record
    assert record["stream_id"] == "cam" and record["frame_seq"] == 0 and record["prompt_id"] == CLASSES.prompt_id
    restored = StreamWorker("cam", lambda: stages, restore=worker.checkpoint())
    assert restored.last_seq() == 0 and restored.stats()["prompt_id"] == CLASSES.prompt_id
    with pytest.raises(ValueError, match="belongs to stream 'cam'"):
        StreamWorker("other", lambda: stages, restore=worker.checkpoint())


def h264_packets(frames: list[np.ndarray]) -> list[tuple[bytes, bool]]:
    """Annex B H.264 packets as ingest's pass-through mode sends them (low delay: no B-frames)."""
    import av

    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt, ctx.framerate = frames[0].shape[1], frames[0].shape[0], "yuv420p", 10
    ctx.options = {"tune": "zerolatency", "bf": "0"}
    packets = []
    for rgb in [*frames, None]:
        source = None if rgb is None else av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        packets += [(bytes(p), bool(p.is_keyframe)) for p in ctx.encode(source)]
    return packets


def test_h264_pass_through_packets(stages):
    frames = make_clip(1, "test", WorldConfig(num_frames=3)).frames
    packets = h264_packets(frames)
    assert [key for _, key in packets] == [True, False, False]
    processor = StreamProcessor("cam", stages, stages.model_id, REFER)
    outs = [processor.process(FrameInput(seq, 0.0, "h264", data, key)) for seq, (data, key) in enumerate(packets)]
    assert [o.seq for o in outs] == [0, 1, 2] and outs[0].masks.shape == (1, 256, 256)
    restarted = StreamProcessor("cam", stages, stages.model_id, REFER)  # e.g. restored mid-GOP
    with pytest.raises(FrameDecodeError, match="waiting for a key frame"):
        restarted.process(FrameInput(1, 0.0, "h264", packets[1][0], False))
