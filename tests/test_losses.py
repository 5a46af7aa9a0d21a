"""Training losses: every part is finite and carries gradient, and a few steps on one sample reduce it."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from models.build import build_tiny
from models.hyperseg import VLLMRequest
from models.losses import NOT_REFERRED, REFERRED, FrameTarget, HyperSegLoss, instance_association_loss, text_loss
from models.predictor import LayerPrediction
from models.prompts import TaskPrompt


def _batch():
    frames = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    square = torch.zeros(64, 64)
    square[10:30, 10:30] = 1
    disc = torch.zeros(64, 64)
    disc[40:60, 35:55] = 1
    requests = [VLLMRequest(TaskPrompt("referring", text="the square")),
                VLLMRequest(TaskPrompt("generic", classes=("square", "disc")), entities=("square", "disc"))]
    targets = [FrameTarget(square[None], torch.tensor([0])),
               FrameTarget(torch.stack([square, disc]), torch.tensor([0, 1]))]
    return frames, requests, targets, ["referring", "generic"]


def _loss(model, criterion, frames, requests, targets, tasks):
    enc = model.encode(frames)
    out = model.vllm_step(enc.image_tokens, enc.pyramid, requests, with_logits=True)
    pred = model.predict(model.decode_pixels(enc.pyramid), out.queries, out.prompts, out.prompt_valid)
    parts, matches = criterion(pred, targets, tasks)
    parts["text"] = text_loss(out.text_logits, out.text_labels)
    return parts, pred, matches


def test_losses_are_finite_and_training_reduces_them():
    torch.manual_seed(0)
    model = build_tiny().train()
    criterion = HyperSegLoss(model.cfg.loss, model.cfg.predictor)
    batch = _batch()
    parts, _, matches = _loss(model, criterion, *batch)
    assert set(parts) == {"mask", "dice", "class", "refer", "text"}
    assert all(torch.isfinite(v) and v > 0 for v in parts.values())
    assert [len(q) for q, _ in matches] == [1, 2]
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    first = None
    for _ in range(8):
        parts, _, _ = _loss(model, criterion, *batch)
        total = sum(parts.values())
        first = first if first is not None else float(total)
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
    assert float(total) < first
    assert model.mask_tokens.grad is not None and model.mask_tokens.grad.abs().sum() > 0
    lora = [p for n, p in model.language.named_parameters() if "lora_A" in n]
    assert all(p.grad is not None for p in lora)


def test_instance_association_prefers_the_matching_query():
    key = torch.eye(4)
    reference = torch.eye(4)
    good = instance_association_loss(key, reference, (torch.tensor([0, 1]), torch.tensor([0, 1])),
                                     (torch.tensor([0, 1]), torch.tensor([0, 1])), temperature=0.1)
    swapped = instance_association_loss(key, reference, (torch.tensor([0, 1]), torch.tensor([0, 1])),
                                        (torch.tensor([1, 0]), torch.tensor([0, 1])), temperature=0.1)
    assert good < 0.01 < swapped
    none = instance_association_loss(key, reference, (torch.tensor([0]), torch.tensor([0])),
                                     (torch.tensor([1]), torch.tensor([1])), temperature=0.1)
    assert none == 0


def test_refer_bce_is_positive_only_at_the_referent_among_negatives():
    """A referring target with a negative object: both are matched to queries, but only the referent's query is
    taught a high refer score (computed by hand against BCE with a single positive)."""
    model_cfg = build_tiny(device="meta").cfg
    criterion = HyperSegLoss(model_cfg.loss, model_cfg.predictor)
    queries = 4
    refer = torch.tensor([[[2.0], [-1.0], [0.5], [0.0]]])  # (B=1, Q, P=1)
    layer = LayerPrediction(masks=torch.zeros(1, queries, 8, 8), refer=refer,
                            classes=torch.zeros(1, queries, 2), regions=torch.zeros(1, queries, 2))
    masks = torch.zeros(2, 32, 32)
    masks[0, :8, :8] = 1
    masks[1, 16:, 16:] = 1
    target = FrameTarget(masks, torch.tensor([REFERRED, NOT_REFERRED]))
    matches = [(torch.tensor([0, 2]), torch.tensor([0, 1]))]  # query 0 -> referent, query 2 -> negative
    parts = criterion.layer_losses(layer, [target], ["referring"], matches)
    wanted = torch.tensor([1.0, 0.0, 0.0, 0.0])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(refer[0, :, 0], wanted)
    assert torch.isclose(parts["refer"], expected * model_cfg.loss.refer_weight)
    assert "refer_rank" not in parts  # off by default, as in the paper

    ranked = HyperSegLoss(dataclasses.replace(model_cfg.loss, refer_rank_weight=3.0), model_cfg.predictor)
    rank = ranked.layer_losses(layer, [target], ["referring"], matches)["refer_rank"]
    by_hand = -(2.0 - math.log(math.exp(2.0) + math.exp(-1.0) + math.exp(0.5) + math.exp(0.0)))  # -log softmax[0]
    assert math.isclose(float(rank), 3.0 * by_hand, rel_tol=1e-5)


def test_anchor_term_is_the_two_way_ce_of_referent_against_anchor_by_hand():
    """Query 0 holds the referent (logit 2), query 2 the anchor (0.5), query 3 another object: the term is
    softplus(0.5 - 2) times its weight; off by default, and absent when the frame's anchor is not in view."""
    model_cfg = build_tiny(device="meta").cfg
    refer = torch.tensor([[[2.0], [-1.0], [0.5], [0.0]]])
    layer = LayerPrediction(masks=torch.zeros(1, 4, 8, 8), refer=refer,
                            classes=torch.zeros(1, 4, 2), regions=torch.zeros(1, 4, 2))
    masks = torch.zeros(3, 32, 32)
    target = FrameTarget(masks, torch.tensor([REFERRED, NOT_REFERRED, NOT_REFERRED]),
                         anchor=torch.tensor([False, True, False]))
    matches = [(torch.tensor([0, 2, 3]), torch.tensor([0, 1, 2]))]
    assert "refer_anchor" not in HyperSegLoss(model_cfg.loss, model_cfg.predictor).layer_losses(
        layer, [target], ["referring"], matches)
    criterion = HyperSegLoss(dataclasses.replace(model_cfg.loss, refer_anchor_weight=2.0), model_cfg.predictor)
    term = criterion.layer_losses(layer, [target], ["reasoning"], matches)["refer_anchor"]
    assert math.isclose(float(term), 2.0 * math.log1p(math.exp(0.5 - 2.0)), rel_tol=1e-5)
    unseen = dataclasses.replace(target, anchor=torch.zeros(3, dtype=torch.bool))
    assert "refer_anchor" not in criterion.layer_losses(layer, [unseen], ["referring"], matches)


def test_attribute_ce_scores_the_matched_queries_objects_by_hand():
    """Two attributes of sizes 3 and 2; two objects matched to queries 1 and 3. The loss is the mean over the two
    attributes of each one's CE over the matched queries, against values computed by hand; with weight 0 there is
    no attribute part, and a weight without the head is a clear error."""
    model_cfg = build_tiny(device="meta").cfg
    predictor = dataclasses.replace(model_cfg.predictor, attribute_classes=(3, 2))
    criterion = HyperSegLoss(dataclasses.replace(model_cfg.loss, attribute_weight=2.0), predictor)
    attributes = torch.zeros(1, 4, 5)
    attributes[0, 1] = torch.tensor([2.0, 0.0, 0.0, 1.0, 0.0])  # attribute 0 says value 0, attribute 1 value 0
    attributes[0, 3] = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0])  # uniform on both
    layer = LayerPrediction(masks=torch.zeros(1, 4, 8, 8), refer=torch.zeros(1, 4, 1),
                            classes=torch.zeros(1, 4, 3), regions=torch.zeros(1, 4, 3), attributes=attributes)
    masks = torch.zeros(2, 32, 32)
    masks[0, :8, :8] = 1
    masks[1, 16:, 16:] = 1
    target = FrameTarget(masks, torch.tensor([0, 1]), attributes=torch.tensor([[0, 1], [2, 0]]))
    matches = [(torch.tensor([1, 3]), torch.tensor([0, 1]))]
    parts = criterion.layer_losses(layer, [target], ["generic"], matches)
    first = -(2.0 - math.log(math.exp(2.0) + 2)) + math.log(3)  # query 1 -> value 0; query 3 -> value 2 (uniform)
    second = -(0.0 - math.log(math.exp(1.0) + 1)) + math.log(2)  # query 1 -> value 1; query 3 -> value 0
    by_hand = (first / 2 + second / 2) / 2
    assert math.isclose(float(parts["attribute"]), 2.0 * by_hand, rel_tol=1e-5)
    assert "attribute" not in HyperSegLoss(model_cfg.loss, predictor).layer_losses(layer, [target], ["generic"],
                                                                                    matches)
    headless = dataclasses.replace(layer, attributes=None)
    with pytest.raises(ValueError, match="attribute head"):
        criterion.layer_losses(headless, [target], ["generic"], matches)


def test_kinematics_l1_scores_the_matched_queries_known_values_by_hand():
    """Two objects matched to queries 2 and 0; the second object's velocity is unknown (NaN). The loss is the mean
    absolute error over the six known values only; with weight 0 there is no part, and a weight without the head is
    a clear error."""
    model_cfg = build_tiny(device="meta").cfg
    predictor = dataclasses.replace(model_cfg.predictor, kinematics_head=True)
    criterion = HyperSegLoss(dataclasses.replace(model_cfg.loss, kinematics_weight=3.0), predictor)
    kinematics = torch.zeros(1, 3, 4)
    kinematics[0, 2] = torch.tensor([0.5, 0.5, 1.0, 0.0])
    kinematics[0, 0] = torch.tensor([0.1, 0.9, 7.0, 7.0])  # its velocity is unknown: never scored
    layer = LayerPrediction(masks=torch.zeros(1, 3, 8, 8), refer=torch.zeros(1, 3, 1), classes=torch.zeros(1, 3, 3),
                            regions=torch.zeros(1, 3, 3), kinematics=kinematics)
    nan = float("nan")
    target = FrameTarget(torch.zeros(2, 32, 32), torch.tensor([0, 1]),
                         kinematics=torch.tensor([[0.25, 0.5, -1.0, 0.5], [0.1, 0.6, nan, nan]]))
    matches = [(torch.tensor([2, 0]), torch.tensor([0, 1]))]
    parts = criterion.layer_losses(layer, [target], ["generic"], matches)
    by_hand = (0.25 + 0.0 + 2.0 + 0.5 + 0.0 + 0.3) / 6
    assert math.isclose(float(parts["kinematics"]), 3.0 * by_hand, rel_tol=1e-5)
    assert "kinematics" not in HyperSegLoss(model_cfg.loss, predictor).layer_losses(layer, [target], ["generic"],
                                                                                     matches)
    with pytest.raises(ValueError, match="kinematics head"):
        criterion.layer_losses(dataclasses.replace(layer, kinematics=None), [target], ["generic"], matches)
