"""LoRA adds trainable parameters only where configured; nothing else in the LLM trains."""

from __future__ import annotations

import torch

from models.build import build_hyperseg
from models.presets import preset_config


def _llm_trainable(model) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.language.named_parameters() if p.requires_grad}


def test_lora_on_q_and_v_only():
    model = build_hyperseg("tiny")
    trainable = _llm_trainable(model)
    layers = model.cfg.language.hf_config["num_hidden_layers"]
    assert trainable, "LoRA must add trainable parameters"
    assert all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert {n.split(".self_attn.")[1].split(".")[0] for n in trainable} == {"q_proj", "v_proj"}
    assert len(trainable) == layers * 2 * 2  # (A, B) x (q, v) per layer
    rank = model.cfg.language.lora.rank
    assert all(rank in p.shape for p in trainable.values())


def test_lora_targets_are_configurable():
    cfg = preset_config("tiny")
    cfg.language.lora.target_modules = ("dense",)
    cfg.language.lora.rank = 4
    trainable = _llm_trainable(build_hyperseg(cfg))
    assert trainable and all(".dense.lora_" in n for n in trainable)
    assert all(4 in p.shape for p in trainable.values())


def test_without_lora_the_llm_trains_in_full():
    cfg = preset_config("tiny")
    cfg.language.lora = None
    model = build_hyperseg(cfg)
    assert all(p.requires_grad for p in model.language.parameters())


def test_vision_encoders_frozen_and_heads_trainable():
    model = build_hyperseg("tiny")
    assert not any(p.requires_grad for p in model.vision.tower.parameters())
    assert not any(p.requires_grad for p in model.pyramid.backbone.parameters())
    for part in (model.vision.projector, model.pyramid.pixel_decoder, model.perceiver, model.predictor):
        assert all(p.requires_grad for p in part.parameters())
    assert model.mask_tokens.requires_grad
