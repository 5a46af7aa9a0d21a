"""Post-processing of predictor outputs into FrameResults, on hand-made logits (no model needed)."""

from __future__ import annotations

import pytest
import torch

from models.config import PredictorConfig
from models.postprocess import (Followed, continuity, distinct_queries, identity, panoptic, referring, semantic,
                                visual)
from models.predictor import LayerPrediction

BIG = 20.0  # a logit whose sigmoid / softmax is 1 to float precision


def test_semantic_scores_are_probabilities_when_queries_overlap():
    """Two queries both sure of class 0 over the left half: the per-pixel sum is 2, the region's score must be 1."""
    masks = torch.full((1, 2, 4, 4), -BIG)
    masks[0, :, :, :2] = BIG
    classes = torch.tensor([[[BIG, 0.0, 0.0], [BIG, 0.0, 0.0]]])  # 2 classes + background
    pred = LayerPrediction(masks=masks, refer=torch.zeros(1, 2, 2), classes=classes, regions=classes)
    result = semantic(pred, 0, ("circle", "square"), PredictorConfig(), (4, 4))
    assert result.labels == ["circle"]
    assert torch.equal(result.masks[0], masks[0, 0] > 0)
    assert torch.allclose(result.scores, torch.ones(1))
    assert (result.semantic[:, 2:] == -1).all()


def _logits(*masks: torch.Tensor) -> torch.Tensor:
    """Binary (h, w) masks -> (1, Q, h, w) logits that binarise back to them."""
    return torch.where(torch.stack(masks), BIG, -BIG).unsqueeze(0)


def test_referring_returns_the_asked_candidates_best_first_by_refer_score_times_mask_quality():
    """Three queries with refer logits 0, 2 and 1 and sure masks (quality 1), but the second mask is empty (quality
    0): the order is query 2 (sigmoid(1) = 0.73), query 0 (sigmoid(0) = 0.5), then the empty one despite its logit."""
    full, empty = torch.ones(4, 4, dtype=torch.bool), torch.zeros(4, 4, dtype=torch.bool)
    left = full.clone()
    left[:, 2:] = False
    pred = LayerPrediction(masks=_logits(full, empty, left), refer=torch.tensor([[[0.0], [2.0], [1.0]]]),
                           classes=torch.zeros(1, 3, 2), regions=torch.zeros(1, 3, 2))
    top = referring(pred, 0, PredictorConfig(), (4, 4), "referring")
    assert top.query_indices.tolist() == [2] and torch.equal(top.masks[0], left) and top.labels == [None]
    three = referring(pred, 0, PredictorConfig(referring_candidates=3), (4, 4), "referring")
    assert three.query_indices.tolist() == [2, 0, 1] and len(three) == 3 and three.labels == [None] * 3
    assert torch.allclose(three.scores, torch.tensor([1.0, 0.0, 2.0]).sigmoid() * torch.tensor([1.0, 1.0, 0.0]))
    assert len(referring(pred, 0, PredictorConfig(referring_candidates=5), (4, 4), "referring")) == 3
    with pytest.raises(ValueError, match="referring_candidates"):
        referring(pred, 0, PredictorConfig(referring_candidates=0), (4, 4), "referring")


def test_referring_candidates_below_the_absence_threshold_get_empty_masks():
    """Sure masks (quality 1) with refer logits 0 and -2: scores 0.5 and sigmoid(-2) = 0.12. A threshold of 0.3
    empties the second candidate only, 0.6 both (the referent taken as not in the frame); the chosen queries and
    their scores are still reported, and 0 keeps every mask."""
    left, right = torch.zeros(4, 4, dtype=torch.bool), torch.zeros(4, 4, dtype=torch.bool)
    left[:, :2], right[:, 2:] = True, True
    pred = LayerPrediction(masks=_logits(left, right), refer=torch.tensor([[[0.0], [-2.0]]]),
                           classes=torch.zeros(1, 2, 2), regions=torch.zeros(1, 2, 2))
    kept = referring(pred, 0, PredictorConfig(referring_candidates=2), (4, 4), "reasoning")
    assert kept.masks.flatten(1).any(1).tolist() == [True, True]
    for threshold, present in ((0.3, [True, False]), (0.6, [False, False])):
        cfg = PredictorConfig(referring_candidates=2, referring_absence_threshold=threshold)
        result = referring(pred, 0, cfg, (4, 4), "reasoning")
        assert result.masks.flatten(1).any(1).tolist() == present
        assert result.query_indices.tolist() == kept.query_indices.tolist() == [0, 1]
        assert torch.equal(result.scores, kept.scores)
    assert torch.equal(referring(pred, 0, PredictorConfig(referring_absence_threshold=0.3), (4, 4),
                                 "referring").masks[0], left)


def test_continuity_is_floor_plus_iou_to_the_power_and_one_without_a_previous_mask():
    cfg = PredictorConfig(continuity_grid=4, continuity_floor=0.1, continuity_power=2.0)
    left, top = torch.zeros(4, 4, dtype=torch.bool), torch.zeros(4, 4, dtype=torch.bool)
    left[:, :2] = True  # 8 cells
    top[:2, :] = True  # 8 cells; 4 shared with left, union 12
    previous = torch.stack([left, torch.zeros(4, 4, dtype=torch.bool)])  # object 1 has no previous mask
    factor = continuity(_logits(left, top)[0], previous, cfg)
    expected = torch.tensor([[(0.1 + 1.0) ** 2, 1.0], [(0.1 + 4 / 12) ** 2, 1.0]])
    assert torch.allclose(factor, expected)


def test_continuity_counts_a_mask_below_the_threshold_by_its_probability():
    """A query 40% sure over exactly the previous mask: soft IoU 0.4 (binarised at 0.5 it would be 0)."""
    cfg = PredictorConfig(continuity_grid=4, continuity_floor=0.1, continuity_power=2.0)
    left = torch.zeros(4, 4, dtype=torch.bool)
    left[:, :2] = True
    unsure = torch.where(left, torch.logit(torch.tensor(0.4)), -BIG).unsqueeze(0)
    factor = continuity(unsure, left.unsqueeze(0), cfg)
    assert torch.allclose(factor, torch.tensor([[(0.1 + 0.4) ** 2]]))


def test_distinct_queries_maximise_the_product_without_sharing_a_query():
    """Both objects like query 0 best; together 0.6 x 0.4 beats 0.5 x 0.3, so object 1 takes query 1."""
    scores = torch.tensor([[0.6, 0.5], [0.3, 0.4], [0.1, 0.1]])
    assert distinct_queries(scores).tolist() == [0, 1]
    assert distinct_queries(torch.tensor([[0.2, 0.9], [0.8, 0.1]])).tolist() == [1, 0]


def test_visual_regions_share_a_query_only_when_distinct_queries_are_off():
    """Both regions score query 0 best (0.5, 0.4 against 0.3, 0.2); jointly 0.3 x 0.4 beats 0.5 x 0.2."""
    regions = torch.log(torch.tensor([[[0.5, 0.4, 0.1], [0.3, 0.2, 0.5]]]))  # (1, Q=2, R+1=3), rows sum to 1
    masks = torch.full((1, 2, 4, 4), BIG)
    pred = LayerPrediction(masks=masks, refer=torch.zeros(1, 2, 1), classes=regions, regions=regions)
    assert visual(pred, 0, 2, PredictorConfig(), (4, 4)).query_indices.tolist() == [1, 0]
    shared = visual(pred, 0, 2, PredictorConfig(distinct_visual_queries=False), (4, 4))
    assert shared.query_indices.tolist() == [0, 0]


def test_visual_choice_follows_the_previous_mask_over_a_slightly_better_looking_twin():
    """Query 1 looks a bit more like the region (softmax 0.6 against 0.4) but query 0 is where the object was."""
    cfg = PredictorConfig(continuity_grid=4)
    here, there = torch.zeros(4, 4, dtype=torch.bool), torch.zeros(4, 4, dtype=torch.bool)
    here[:2, :2], there[2:, 2:] = True, True
    regions = torch.log(torch.tensor([[[0.4, 0.6], [0.6, 0.4]]])).transpose(1, 2)  # (1, Q=2, R+1=2)
    pred = LayerPrediction(masks=_logits(here, there), refer=torch.zeros(1, 2, 1), classes=regions, regions=regions)
    assert visual(pred, 0, 1, cfg, (4, 4)).query_indices.tolist() == [1]
    following = visual(pred, 0, 1, cfg, (4, 4), Followed(masks=here.unsqueeze(0)))
    assert following.query_indices.tolist() == [0] and torch.equal(following.masks[0], here)


def test_visual_object_is_taken_as_gone_when_its_best_score_falls_below_the_absence_threshold():
    """Two regions; region 0's object was where no query is now, so its best score is the continuity floor's
    (0.05 ** 4 x 0.5 = 3.1e-6); region 1 has no previous mask (score 0.5). Only region 0 is emptied, and only when
    the threshold is above its score; its chosen query and score are still reported."""
    here, there, gone = (torch.zeros(4, 4, dtype=torch.bool) for _ in range(3))
    here[:2, :2], there[2:, 2:], gone[:2, 2:] = True, True, True
    regions = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.25, 0.5, 0.25]]]))  # (1, Q=2, R+1=3)
    pred = LayerPrediction(masks=_logits(here, there), refer=torch.zeros(1, 2, 1), classes=regions, regions=regions)
    previous = Followed(masks=torch.stack([gone, torch.zeros(4, 4, dtype=torch.bool)]))
    kept = visual(pred, 0, 2, PredictorConfig(continuity_grid=4), (4, 4), previous)
    assert kept.masks.flatten(1).any(1).tolist() == [True, True]
    assert torch.allclose(kept.scores, torch.tensor([0.5 * 0.05**4, 0.5]))
    emptied = visual(pred, 0, 2, PredictorConfig(continuity_grid=4, absence_threshold=1e-5), (4, 4), previous)
    assert emptied.masks.flatten(1).any(1).tolist() == [False, True]
    assert torch.equal(emptied.masks[1], there)
    assert emptied.query_indices.tolist() == kept.query_indices.tolist() == [0, 1]
    assert torch.equal(emptied.scores, kept.scores)


def test_identity_is_half_one_plus_cosine_to_the_power():
    """Query 0 points like the anchor (cos 1), query 1 at right angles (cos 0), query 2 opposite (cos -1); lengths
    do not matter."""
    instance = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])
    factor = identity(instance, torch.tensor([[1.0, 0.0]]), PredictorConfig(identity_power=3.0))
    assert torch.allclose(factor, torch.tensor([[1.0], [0.125], [0.0]]))


def test_visual_choice_goes_back_to_the_prompted_object_by_its_identity():
    """The continuity prior followed a look-alike (query 1, where the mask was last frame); query 0 overlaps nothing
    followed but has the first frame's embedding. Continuity alone keeps the look-alike (0.5 x 1.05 ** 4 = 0.61
    against 0.5 x 0.05 ** 4 = 3.1e-6); identity power 12 multiplies the look-alike (cos -0.5) by 0.25 ** 12 = 6e-8,
    which tips it."""
    here, there = torch.zeros(4, 4, dtype=torch.bool), torch.zeros(4, 4, dtype=torch.bool)
    here[:2, :2], there[2:, 2:] = True, True
    regions = torch.log(torch.tensor([[[0.5, 0.5], [0.5, 0.5]]]))  # (1, Q=2, R+1=2): both look alike
    pred = LayerPrediction(masks=_logits(here, there), refer=torch.zeros(1, 2, 1), classes=regions, regions=regions)
    instance = torch.tensor([[1.0, 0.0], [-0.5, 0.75 ** 0.5]])
    follow = Followed(masks=there.unsqueeze(0), identity=torch.tensor([[1.0, 0.0]]))
    cfg = PredictorConfig(continuity_grid=4)
    assert visual(pred, 0, 1, cfg, (4, 4), follow, instance).query_indices.tolist() == [1]  # identity_power 0
    with_identity = PredictorConfig(continuity_grid=4, identity_power=12.0)
    chosen = visual(pred, 0, 1, with_identity, (4, 4), follow, instance)
    assert chosen.query_indices.tolist() == [0] and torch.equal(chosen.masks[0], here)
    with pytest.raises(ValueError, match="instance embeddings"):
        visual(pred, 0, 1, with_identity, (4, 4), follow)


def test_panoptic_keeps_a_segment_only_if_the_overlap_threshold_share_of_its_mask_survives():
    """Query 0 (circle, 0.9) owns the left half; query 1 (square, 0.6) covers everything, so only its right half,
    0.5 of its mask, survives: dropped at overlap threshold 0.8, kept at 0.5."""
    left, everything = torch.zeros(4, 4, dtype=torch.bool), torch.ones(4, 4, dtype=torch.bool)
    left[:, :2] = True
    classes = torch.log(torch.tensor([[[0.9, 0.05, 0.05], [0.05, 0.6, 0.35]]]))  # (1, Q=2, 2 classes + background)
    pred = LayerPrediction(masks=_logits(left, everything), refer=torch.zeros(1, 2, 1), classes=classes,
                           regions=classes)
    strict = panoptic(pred, 0, ("circle", "square"), PredictorConfig(overlap_threshold=0.8), (4, 4))
    assert strict.labels == ["circle"] and torch.equal(strict.masks[0], left)
    loose = panoptic(pred, 0, ("circle", "square"), PredictorConfig(overlap_threshold=0.5), (4, 4))
    assert loose.labels == ["circle", "square"] and torch.equal(loose.masks[1], ~left)
