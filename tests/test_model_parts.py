"""Shapes of every module of the tiny preset, and the per-part guarantees of the paper."""

from __future__ import annotations

import pytest
import torch

from models.build import build_tiny
from models.hyperseg import VLLMRequest
from models.perceiver import FineGrainedVisualPerceiver
from models.presets import preset_config
from models.prompts import TaskPrompt


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_tiny().eval()


@pytest.fixture(scope="module")
def encoded(model):
    torch.manual_seed(1)
    frames = torch.randint(0, 256, (2, 200, 300, 3), dtype=torch.uint8)
    with torch.no_grad():
        return model.encode(frames)


def test_encoder_shapes(model, encoded):
    cfg = model.cfg
    assert encoded.image_tokens.shape == (2, cfg.vision.num_tokens, cfg.language.hidden_size)
    side = cfg.pyramid.image_size
    for i, name in enumerate(("res2", "res3", "res4", "res5")):
        stride = 4 * 2**i
        assert encoded.pyramid[name].shape == (2, cfg.pyramid.channels[i], side // stride, side // stride)


def test_pixel_decoder_shapes(model, encoded):
    cfg = model.cfg.pyramid
    with torch.no_grad():
        pixel = model.decode_pixels(encoded.pyramid)
    assert pixel.mask_features.shape == (2, cfg.mask_feature_size, cfg.image_size // 4, cfg.image_size // 4)
    assert [tuple(m.shape[-2:]) for m in pixel.multi_scale] == [(cfg.image_size // s,) * 2 for s in (32, 16, 8)]
    assert all(m.shape[1] == cfg.feature_size for m in pixel.multi_scale)


def test_vllm_and_predictor_shapes(model, encoded):
    cfg = model.cfg
    requests = [VLLMRequest(TaskPrompt("referring", text="the red circle")),
                VLLMRequest(TaskPrompt("generic", classes=("circle", "square", "star"), recognize_entities=False))]
    with torch.no_grad():
        out = model.vllm_step(encoded.image_tokens, encoded.pyramid, requests)
        pred = model.predict(model.decode_pixels(encoded.pyramid), out.queries, out.prompts, out.prompt_valid)
    q, d = cfg.predictor.num_queries, cfg.predictor.hidden_dim
    assert out.queries.shape == (2, q, d)
    assert out.prompts.shape == (2, 3, d)
    assert out.prompt_valid.tolist() == [[True, False, False], [True, True, True]]
    assert out.next_latents.shape == (2, cfg.perceiver.num_latents, cfg.perceiver.latent_dim)
    assert len(pred.layers) == cfg.predictor.num_layers + 1  # initial prediction + one per decoder layer
    final = pred.final
    mask_side = cfg.pyramid.image_size // 4
    assert final.masks.shape == (2, q, mask_side, mask_side)
    assert final.refer.shape == (2, q, 3)
    assert final.classes.shape == (2, q, 4)  # 3 prompts + background
    assert torch.isinf(final.classes[0, :, 1:3]).all()  # padded prompts never win
    assert pred.instance.shape == (2, q, cfg.predictor.instance_embed_dim)
    assert pred.boxes.shape == (2, q, 4) and bool(((pred.boxes >= 0) & (pred.boxes <= 1)).all())


def test_without_entity_recognition_every_listed_class_is_taken(model, encoded, monkeypatch):
    """A model configured without hybrid entity recognition never generates names and ignores taught ones, so
    training and serving see the same sequence."""
    monkeypatch.setattr(model.cfg.language, "recognize_entities", False)
    monkeypatch.setattr(model, "recognize_entities", lambda *a: pytest.fail("generated entity names"))
    classes = ("circle", "square", "star")
    requests = [VLLMRequest(TaskPrompt("generic", classes=classes)),
                VLLMRequest(TaskPrompt("generic", classes=classes), entities=("square",))]
    with torch.no_grad():
        out = model.vllm_step(encoded.image_tokens, encoded.pyramid, requests)
    assert out.entities == [classes, classes]


@pytest.mark.parametrize("gated", [True, False])
def test_perceiver_shapes(gated):
    cfg = preset_config("tiny").perceiver
    cfg.gated = gated
    channels = {"res3": 8, "res4": 16, "res5": 32}
    fvp = FineGrainedVisualPerceiver(cfg, channels)
    feats = {name: torch.randn(3, c, 8 // (i + 1), 8 // (i + 1)) for i, (name, c) in enumerate(channels.items())}
    out = fvp(feats, fvp.start_latents(3))
    assert out.shape == (3, cfg.num_latents, cfg.latent_dim)


def test_perceiver_gate_is_identity_at_initialisation():
    cfg = preset_config("tiny").perceiver
    channels = {"res3": 8, "res4": 16, "res5": 32}
    fvp = FineGrainedVisualPerceiver(cfg, channels)
    feats = {name: torch.randn(2, c, 6, 6) for name, c in channels.items()}
    latents = torch.randn(2, cfg.num_latents, cfg.latent_dim)
    assert torch.equal(fvp(feats, latents), latents)


def test_ungated_perceiver_is_not_identity():
    cfg = preset_config("tiny").perceiver
    cfg.gated = False
    channels = {"res3": 8, "res4": 16, "res5": 32}
    fvp = FineGrainedVisualPerceiver(cfg, channels)
    feats = {name: torch.randn(2, c, 6, 6) for name, c in channels.items()}
    latents = torch.randn(2, cfg.num_latents, cfg.latent_dim)
    assert not torch.allclose(fvp(feats, latents), latents)


def test_gate_opens_after_training_its_parameters():
    cfg = preset_config("tiny").perceiver
    fvp = FineGrainedVisualPerceiver(cfg, {"res3": 8, "res4": 16, "res5": 32})
    for block in fvp.blocks:
        torch.nn.init.normal_(block.gate.mlp[2].bias)
    feats = {name: torch.randn(1, c, 6, 6) for name, c in {"res3": 8, "res4": 16, "res5": 32}.items()}
    latents = torch.randn(1, cfg.num_latents, cfg.latent_dim)
    assert not torch.allclose(fvp(feats, latents), latents)
