"""The attributes' agreement in the refer logit (`PredictorConfig.refer_attribute_match`) and the CE that teaches E_P
to name its referent's attributes (`LossConfig.prompt_attribute_weight`): the formulas by hand, that both are off by
default and need what they read, and that a model with the match builds, runs and round-trips."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from models.build import build_hyperseg
from models.checkpoint import load_checkpoint, save_checkpoint
from models.config import LossConfig, PredictorConfig
from models.hyperseg import VLLMRequest
from models.losses import NOT_REFERRED, REFERRED, FrameTarget, HyperSegLoss
from models.predictor import PredictorOutput, attribute_agreement
from models.prompts import TaskPrompt
from models.presets import preset_config
from pipeline.evaluate import main as evaluate_command
from pipeline.train import build_parser, run_config

BIG = 20.0  # a logit whose softmax is one-hot to float precision


def test_agreement_by_hand():
    """Two attributes with 2 and 3 values. A sure query of values (0, 2) against a prompt sure of (0, 2): log 2 +
    log 3; against a prompt sure of (1, 2): the first attribute agrees only through the e^-20 tails of both sides
    (log(2 x 2e^-20) + log 3); against a uniform prompt: 0 (chance)."""
    query = torch.tensor([[[BIG, 0.0, 0.0, 0.0, BIG]]])  # (1, 1, 5): attribute 0 = value 0, attribute 1 = value 2
    prompts = torch.tensor([[[BIG, 0.0, 0.0, 0.0, BIG], [0.0, BIG, 0.0, 0.0, BIG], [0.0] * 5]])
    got = attribute_agreement(query, prompts, (2, 3))
    assert got.shape == (1, 1, 3)
    assert got[0, 0, 0].item() == pytest.approx(math.log(2) + math.log(3), abs=1e-4)
    assert got[0, 0, 1].item() == pytest.approx(math.log(4) - BIG + math.log(3), abs=1e-3)
    assert got[0, 0, 2].item() == pytest.approx(0.0, abs=1e-6)
    half = torch.tensor([[[0.0, 0.0, -BIG, BIG, BIG]]])  # attribute 0 uniform, attribute 1 split between 1 and 2
    got = attribute_agreement(half, prompts, (2, 3))
    assert got[0, 0, 0].item() == pytest.approx(math.log(3 * 0.5), abs=1e-4)  # only the second one counts
    assert got[0, 0, 2].item() == pytest.approx(0.0, abs=1e-6)


def test_off_by_default_and_needs_the_attribute_head():
    assert not preset_config("tiny").predictor.refer_attribute_match
    cfg = preset_config("tiny")
    cfg.predictor = dataclasses.replace(cfg.predictor, refer_attribute_match=True)
    with pytest.raises(ValueError, match="attribute head"):
        build_hyperseg(cfg)
    with pytest.raises(ValueError, match="--attribute-weight"):
        run_config(build_parser().parse_args(["--preset", "tiny", "--refer-attribute-match"]))


def test_refer_logit_adds_the_weighted_agreement_and_the_model_round_trips(tmp_path):
    """The flag builds a model whose refer logits are the dot product plus the agreement of the query states' and
    E_P's attribute logits (through the one head), on every decoder layer, times `attribute_match_weight` (1 in
    training, 2.5 here at inference); saved and loaded, it is the same."""
    cfg = run_config(build_parser().parse_args(["--preset", "tiny", "--attribute-weight", "1",
                                                "--refer-attribute-match"]))
    assert cfg.predictor.refer_attribute_match
    torch.manual_seed(0)
    model = build_hyperseg(cfg).eval()
    predictor = model.predictor
    with torch.no_grad():
        predictor.attribute_head.weight.normal_(std=0.5)  # far from uniform, so the agreement is not ~0
    seen = []
    predictor.refer_head.register_forward_hook(lambda module, args, out: seen.append(out))
    frames = [torch.randint(0, 255, (64, 64, 3), dtype=torch.uint8)]
    encoded = model.encode(frames)
    out = model.vllm_step(encoded.image_tokens, encoded.pyramid,
                          [VLLMRequest(TaskPrompt("referring", text="the red circle"))])
    with torch.no_grad():
        pred = model.predict(model.decode_pixels(encoded.pyramid), out.queries, out.prompts, out.prompt_valid)
    described = predictor.attribute_head(out.prompts)
    for layer, dot in zip(pred.layers, seen, strict=True):
        expected = dot + attribute_agreement(layer.attributes, described, cfg.predictor.attribute_classes)
        assert torch.allclose(layer.refer, expected, atol=1e-5)
        assert not torch.allclose(layer.refer, dot, atol=1e-3)
    assert cfg.predictor.attribute_match_weight == 1.0
    predictor.cfg.attribute_match_weight = 2.5
    with torch.no_grad():
        weighted = model.predict(model.decode_pixels(encoded.pyramid), out.queries, out.prompts, out.prompt_valid)
    for layer, plain, dot in zip(weighted.layers, pred.layers, seen[len(pred.layers):], strict=True):
        assert torch.allclose(layer.refer, dot + 2.5 * (plain.refer - dot), atol=1e-5)
    predictor.cfg.attribute_match_weight = 1.0
    save_checkpoint(model, tmp_path)
    loaded, report = load_checkpoint(tmp_path)
    assert report.complete and loaded.cfg.predictor.refer_attribute_match


def test_prompt_attribute_loss_by_hand_and_its_flags():
    """Sample 0 refers to object 0 (attributes 1 and 2 of vocabularies of 2 and 3); object 1 is a negative and
    sample 1 is generic, so neither counts: the loss is the mean of the two CEs of sample 0's E_P logits."""
    cfg = PredictorConfig(attribute_classes=(2, 3), refer_attribute_match=True)
    criterion = HyperSegLoss(LossConfig(prompt_attribute_weight=1.0), cfg)
    described = torch.tensor([[[0.5, -0.5, 1.0, 0.0, 2.0]], [[9.0, 0.0, 9.0, 0.0, 0.0]]])
    masks = torch.zeros(2, 4, 4)
    targets = [FrameTarget(masks, torch.tensor([REFERRED, NOT_REFERRED]), attributes=torch.tensor([[1, 2], [0, 0]])),
               FrameTarget(masks, torch.tensor([0, 1]), attributes=torch.tensor([[0, 0], [1, 1]]))]
    output = PredictorOutput(layers=[], instance=torch.zeros(2, 3, 4), boxes=torch.zeros(2, 3, 4),
                             described=described)
    got = criterion._prompt_attribute_loss(output, targets, ["referring", "generic"])
    expected = (torch.nn.functional.cross_entropy(described[0, :, :2], torch.tensor([1]))
                + torch.nn.functional.cross_entropy(described[0, :, 2:], torch.tensor([2]))) / 2
    assert torch.allclose(got, expected)
    assert criterion._prompt_attribute_loss(output, targets[1:], ["generic"]) is None
    with pytest.raises(ValueError, match="refer_attribute_match"):
        criterion._prompt_attribute_loss(dataclasses.replace(output, described=None), targets, ["referring", "generic"])
    args = ["--preset", "tiny", "--attribute-weight", "1", "--prompt-attribute-weight", "2"]
    with pytest.raises(ValueError, match="--refer-attribute-match"):
        run_config(build_parser().parse_args(args))
    chosen = run_config(build_parser().parse_args(args + ["--refer-attribute-match"]))
    assert chosen.loss.prompt_attribute_weight == 2 and chosen.predictor.refer_attribute_match


def test_prompt_attribute_loss_named_only_by_hand():
    """With prompt_attribute_named_only, each attribute's CE counts only the samples whose prompt names it: sample 0
    names attribute 0, sample 1 both, so attribute 0 averages both samples' CEs and attribute 1 has sample 1's only.
    A batch whose prompts name nothing gives None; targets without the mask count every attribute."""
    cfg = PredictorConfig(attribute_classes=(2, 3), refer_attribute_match=True)
    criterion = HyperSegLoss(LossConfig(prompt_attribute_weight=1.0, prompt_attribute_named_only=True), cfg)
    described = torch.tensor([[[0.5, -0.5, 1.0, 0.0, 2.0]], [[1.0, 3.0, 0.0, 2.0, 0.0]]])
    masks = torch.zeros(1, 4, 4)
    targets = [FrameTarget(masks, torch.tensor([REFERRED]), attributes=torch.tensor([[1, 2]]),
                           named_attributes=torch.tensor([True, False])),
               FrameTarget(masks, torch.tensor([REFERRED]), attributes=torch.tensor([[0, 1]]),
                           named_attributes=torch.tensor([True, True]))]
    output = PredictorOutput(layers=[], instance=torch.zeros(2, 3, 4), boxes=torch.zeros(2, 3, 4),
                             described=described)
    ce = torch.nn.functional.cross_entropy
    first = ce(described[:, 0, :2], torch.tensor([1, 0]))
    second = ce(described[1:, 0, 2:], torch.tensor([1]))
    got = criterion._prompt_attribute_loss(output, targets, ["referring", "reasoning"])
    assert torch.allclose(got, (first + second) / 2)
    unnamed = [dataclasses.replace(t, named_attributes=torch.tensor([False, False])) for t in targets]
    assert criterion._prompt_attribute_loss(output, unnamed, ["referring", "reasoning"]) is None
    every = [dataclasses.replace(t, named_attributes=None) for t in targets]
    both = (first + ce(described[:, 0, 2:], torch.tensor([2, 1]))) / 2
    assert torch.allclose(criterion._prompt_attribute_loss(output, every, ["referring", "reasoning"]), both)
    args = ["--preset", "tiny", "--attribute-weight", "1", "--refer-attribute-match", "--prompt-attribute-named-only"]
    with pytest.raises(ValueError, match="--prompt-attribute-weight"):
        run_config(build_parser().parse_args(args))
    chosen = run_config(build_parser().parse_args(args + ["--prompt-attribute-weight", "2"]))
    assert chosen.loss.prompt_attribute_named_only
    assert not run_config(build_parser().parse_args(args[:-1])).loss.prompt_attribute_named_only


def test_eval_refuses_a_match_weight_for_a_model_without_the_match(tmp_path, capsys):
    """`eval --attribute-match-weight` on a checkpoint without the attribute match would change nothing: a clear
    error before any clip is evaluated."""
    save_checkpoint(build_hyperseg(preset_config("tiny")), tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        evaluate_command(["--checkpoint", str(tmp_path), "--attribute-match-weight", "2", "--clips", "1"])
    assert exit_info.value.code == 2
    assert "has no attribute match" in capsys.readouterr().err
