"""Per-stream state: bytes round trip, prompt aggregation, and the effect of carried state."""

from __future__ import annotations

import pytest
import torch

from models.build import build_tiny
from models.prompts import TaskPrompt
from models.temporal import StreamState, TemporalAdapter, TrackerState
from models.mask_grid import on_grid
from models.video_predictor import HyperSegVideoPredictor, followed


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    return HyperSegVideoPredictor(build_tiny())


def _frame(seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (96, 128, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_state_round_trips_through_bytes_bit_exactly(predictor):
    prompt = TaskPrompt("vis", classes=("circle", "square"))
    _, state = predictor.step(_frame(1), prompt)
    state.tracker = TrackerState(embeddings=torch.randn(3, 8), ids=torch.tensor([1, 2, 5]),
                                 labels=torch.tensor([0, 1, 0]), misses=torch.tensor([0, 2, 1]), next_id=6)
    restored = StreamState.from_bytes(state.to_bytes())
    for name in ("latents", "prompt_history", "queries", "prompts"):
        original, copy = getattr(state, name), getattr(restored, name)
        assert copy.dtype == original.dtype and torch.equal(copy, original), name
    for name in ("embeddings", "ids", "labels", "misses"):
        assert torch.equal(getattr(restored.tracker, name), getattr(state.tracker, name))
    assert (restored.prompt_key, restored.frame_index, restored.tracker.next_id, restored.entities) == (
        state.prompt_key, state.frame_index, 6, state.entities)
    assert restored.to_bytes() == state.to_bytes()


def test_state_bytes_are_not_pickle_and_bad_bytes_are_refused():
    data = StreamState(prompt_key="abc").to_bytes()
    assert not data.startswith(b"\x80")  # pickle protocol marker
    with pytest.raises(ValueError, match="not a serialised StreamState"):
        StreamState.from_bytes(b"garbage")


def test_carried_state_changes_the_next_frame(predictor):
    prompt = TaskPrompt("referring", text="the small green triangle")
    _, state = predictor.step(_frame(1), prompt)
    assert state.latents is not None
    _, carried_state = predictor.step(_frame(2), prompt, state)
    _, fresh_state = predictor.step(_frame(2), prompt, None)
    assert not torch.allclose(carried_state.queries, fresh_state.queries)
    assert not torch.allclose(carried_state.latents, fresh_state.latents)


def test_prompt_change_resets_state(predictor):
    _, state = predictor.step(_frame(1), TaskPrompt("referring", text="the red circle"))
    _, after = predictor.step(_frame(2), TaskPrompt("referring", text="the blue square"), state)
    assert after.frame_index == 1 and after.prompt_history.shape[0] == 1


def test_aggregated_prompt_is_the_mean_over_the_window():
    window = 3
    state = StreamState()
    frames = [torch.randn(2, 4) for _ in range(5)]
    for p in frames:
        pooled = state.push_prompts(p, window)
    assert state.prompt_history.shape == (window, 2, 4)
    expected = (frames[2] + frames[3] + frames[4]) / 3
    assert torch.allclose(pooled, expected, atol=1e-6)
    assert torch.allclose(TemporalAdapter.aggregate(torch.stack(frames)), torch.stack(frames).mean(0), atol=1e-6)


def test_window_history_grows_until_full():
    state = StreamState()
    first = torch.randn(1, 4)
    assert torch.equal(state.push_prompts(first, 4), first)
    second = torch.randn(1, 4)
    assert torch.allclose(state.push_prompts(second, 4), (first + second) / 2)


def test_visual_prompt_state_follows_each_object_and_round_trips(predictor):
    """The first frame follows the prompt region (every grid cell it touches); later frames follow the last mask and,
    with identity_power set, the chosen query's instance embedding from the first frame, which stays fixed."""
    region = torch.zeros(96, 128, dtype=torch.bool)
    region[10:20, 30:40] = True
    prompt = TaskPrompt("visual", regions=(region,))
    cfg = predictor.cfg.predictor
    grid = cfg.continuity_grid
    first = followed(StreamState(prompt_key=prompt.key()), prompt, predictor.cfg)
    assert first.masks.shape == (1, grid, grid) and first.masks.any() and not first.masks.all()
    assert first.identity is None
    saved = cfg.identity_power
    cfg.identity_power = 2.0
    try:
        result, state = predictor.step(_frame(1), prompt)
        assert torch.equal(state.previous_masks, on_grid(result.masks, grid) > 0.5)
        identity = state.identity.clone()
        _, state = predictor.step(_frame(2), prompt, state)
        follow = followed(state, prompt, predictor.cfg)
    finally:
        cfg.identity_power = saved
    assert identity.shape == (1, cfg.instance_embed_dim)
    assert torch.allclose(identity.norm(dim=-1), torch.ones(1))
    assert torch.equal(state.identity, identity) and torch.equal(follow.identity, identity)
    assert torch.equal(follow.masks, state.previous_masks)
    restored = StreamState.from_bytes(state.to_bytes())
    assert restored.previous_masks.dtype == torch.bool and torch.equal(restored.previous_masks, state.previous_masks)
    assert torch.equal(restored.identity, state.identity)
    assert followed(state, prompt, predictor.cfg).identity is None  # identity_power 0: not followed
    assert followed(state, TaskPrompt("referring", text="the red circle"), predictor.cfg) is None