"""VIS association (bi-softmax, EMA memory, birth and death) and visual-prompt rasterisation / pooling."""

from __future__ import annotations

import torch

from models.config import TrackerConfig
from models.temporal import TrackerState
from models.tracker import associate, bi_softmax
from models.visual_prompts import box_mask, points_mask, sample_region_feature, scribble_mask

CFG = TrackerConfig(match_threshold=0.3, min_cosine=0.5, temperature=0.1, birth_score=0.5, max_age=2, momentum=0.8)


def _step(state, embeddings, scores):
    return associate(CFG, state, embeddings, torch.tensor(scores), torch.zeros(len(scores), dtype=torch.long))


def test_bi_softmax_is_the_mean_of_both_directions():
    logits = torch.randn(3, 2)
    assert torch.allclose(bi_softmax(logits), (logits.softmax(1) + logits.softmax(0)) / 2)


def test_tracks_are_born_matched_and_die():
    basis = torch.eye(4) * 10
    ids, state = _step(TrackerState(), basis[:2], [0.9, 0.9])
    assert ids.tolist() == [1, 2] and state.next_id == 3
    ids, state = _step(state, basis[[1, 0]], [0.9, 0.9])  # swapped order: identities follow the embeddings
    assert ids.tolist() == [2, 1]
    ids, state = _step(state, basis[2:3], [0.2])  # a weak new object is not born; old tracks age
    assert ids.tolist() == [-1] and state.misses.tolist() == [1, 1]
    for _ in range(2):
        _, state = _step(state, basis[3:4], [0.1])
    assert state.ids.numel() == 0  # unmatched past max_age: dead


def test_memory_is_an_ema_and_the_input_state_is_untouched():
    first = torch.tensor([[1.0, 0.0]])
    _, state = _step(TrackerState(), first, [0.9])
    before = state.embeddings.clone()
    _, after = _step(state, torch.tensor([[1.0, 1.0]]), [0.9])
    expected = torch.nn.functional.normalize(0.8 * before[0] + 0.2 * torch.tensor([0.7071, 0.7071]), dim=0)
    assert torch.allclose(after.embeddings[0], expected, atol=1e-4)
    assert torch.equal(state.embeddings, before)


def test_rasterisation_of_points_boxes_and_scribbles():
    box = box_mask((2, 3, 5, 4), (8, 8))
    assert box.sum() == 4 * 2 and box[3, 2] and box[4, 5] and not box[5, 5]
    disc = points_mask([(4, 4)], (9, 9), radius=2)
    assert disc.sum() == 13 and disc[4, 4] and disc[2, 4] and not disc[2, 2]
    stroke = scribble_mask([(0, 0), (7, 0)], (4, 8), width=1)
    assert stroke[0].all() and not stroke[2].any()


def test_region_feature_averages_inside_the_mask():
    grid = torch.zeros(2, 4, 4)
    grid[0, :2, :2] = 1.0  # top-left quadrant of channel 0
    grid[1] = 5.0
    inside = box_mask((0, 0, 15, 15), (32, 32))  # the top-left quadrant at 8x the grid resolution
    feature = sample_region_feature(grid, inside, num_points=64)
    assert torch.allclose(feature[1], torch.tensor(5.0))  # a constant channel is reproduced exactly
    outside = box_mask((16, 16, 31, 31), (32, 32))
    away = sample_region_feature(grid, outside, num_points=64)
    assert feature[0] > 0.7 and away[0] < 0.3  # bilinear sampling blurs only the quadrant's edge
