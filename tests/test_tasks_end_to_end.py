"""Every task runs end to end on `tiny` through the per-frame entry point, alone and batched across streams."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.build import build_tiny
from models.hyperseg import parse_entities
from models.prompts import TaskPrompt
from models.video_predictor import FrameRequest, HyperSegVideoPredictor
from models.visual_prompts import box_mask, points_mask

H, W = 120, 160
CLASSES = ("circle", "square", "triangle")


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    model = build_tiny()
    # An untrained model scores everything near chance; open the thresholds so the generic paths produce objects.
    model.cfg.predictor.object_score_threshold = 0.0
    model.cfg.tracker.birth_score = 0.0
    return HyperSegVideoPredictor(model)


def _prompts() -> list[TaskPrompt]:
    return [
        TaskPrompt("referring", text="the small green triangle"),
        TaskPrompt("reasoning", text="the shape with the same colour as the star"),
        TaskPrompt("generic", classes=CLASSES, generic_mode="panoptic"),
        TaskPrompt("generic", classes=CLASSES, generic_mode="semantic"),
        TaskPrompt("generic", classes=CLASSES, generic_mode="instance"),
        TaskPrompt("visual", regions=(box_mask((10, 10, 50, 40), (H, W)), points_mask([(100, 80)], (H, W), 5))),
        TaskPrompt("vis", classes=CLASSES),
    ]


def _check(result, prompt: TaskPrompt) -> None:
    assert result.masks.dtype == torch.bool and result.masks.shape[1:] == (H, W)
    assert result.scores.shape[0] == len(result) == len(result.labels) == len(result.track_ids)
    if prompt.task in ("referring", "reasoning"):
        assert len(result) == 1
    if prompt.task == "visual":
        assert len(result) == len(prompt.regions)
    if prompt.task in ("generic", "vis"):
        assert set(result.labels) <= set(CLASSES)
    if prompt.generic_mode == "semantic" and prompt.task == "generic":
        assert result.semantic is not None and result.semantic.shape == (H, W)


@pytest.mark.parametrize("index", range(7))
def test_task_runs_for_two_frames(predictor, index):
    prompt = _prompts()[index]
    frames = np.random.default_rng(index).integers(0, 256, (2, H, W, 3), dtype=np.uint8)
    result, state = predictor.step(frames[0], prompt)
    _check(result, prompt)
    result, state = predictor.step(frames[1], prompt, state)
    _check(result, prompt)
    assert state.frame_index == 2
    if prompt.task == "vis":
        assert len(result) > 0 and all(t is not None for t in result.track_ids)


def test_batched_streams_match_single_stream_results(predictor):
    frames = np.random.default_rng(7).integers(0, 256, (3, H, W, 3), dtype=np.uint8)
    prompts = [_prompts()[0], _prompts()[2], _prompts()[5]]
    batched = predictor.step_batch([FrameRequest(f, p) for f, p in zip(frames, prompts)])
    for (result, _), frame, prompt in zip(batched, frames, prompts):
        single, _ = predictor.step(frame, prompt)
        assert torch.allclose(result.scores, single.scores, atol=1e-4)


def test_key_frame_reuse_skips_the_llm(predictor):
    frames = np.random.default_rng(11).integers(0, 256, (2, H, W, 3), dtype=np.uint8)
    prompt = _prompts()[0]
    _, state = predictor.step(frames[0], prompt)
    _, reused = predictor.step(frames[1], prompt, state, run_vllm=False)
    assert torch.equal(reused.queries, state.queries)
    _, rerun = predictor.step(frames[1], prompt, state, run_vllm=True)
    assert not torch.equal(rerun.queries, state.queries)


def test_entity_generation_runs_and_parses():
    assert parse_entities(" Circle, triangle,  hexagon, circle", CLASSES) == ("circle", "triangle")
    assert parse_entities("", CLASSES) == ()


def test_bad_prompts_are_refused():
    with pytest.raises(ValueError, match="non-empty expression"):
        TaskPrompt("referring", text=" ")
    with pytest.raises(ValueError, match="class list"):
        TaskPrompt("generic")
    with pytest.raises(ValueError, match="unknown task"):
        TaskPrompt("detect", text="x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty 2-D mask"):
        TaskPrompt("visual", regions=(torch.zeros(4, 4, dtype=torch.bool),))


def test_bad_frames_are_refused(predictor):
    with pytest.raises(ValueError, match="uint8 RGB"):
        predictor.step(np.zeros((H, W), dtype=np.uint8), _prompts()[0])
