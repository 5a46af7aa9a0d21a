"""Post-processing of predictor outputs into FrameResults, on hand-made logits (no model needed)."""

from __future__ import annotations

import torch

from models.config import PredictorConfig
from models.postprocess import semantic
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
