"""Presets: the 3B layout builds on meta without allocating, with the released parameter count."""

from __future__ import annotations

import json
import subprocess
import sys

from models.build import build_hyperseg, build_hyperseg_3b
from models.config import HyperSegConfig
from models.presets import PRESETS, preset_config


def test_3b_builds_on_meta_with_the_released_size():
    model = build_hyperseg_3b()
    params = list(model.parameters())
    assert all(p.is_meta for p in params)
    total = sum(p.numel() for p in params)
    assert 3.2e9 <= total <= 3.6e9
    cfg = model.cfg
    assert cfg.vision.num_tokens == 729 and cfg.language.hidden_size == 2560
    assert cfg.perceiver.num_latents == 128 and cfg.perceiver.latent_dim == 512
    assert (cfg.predictor.num_layers, cfg.predictor.num_queries, cfg.predictor.hidden_dim) == (9, 100, 256)
    assert len(model.predictor.decoder.layers) == 9


def test_tiny_is_a_few_million_parameters():
    total = sum(p.numel() for p in build_hyperseg("tiny", "meta").parameters())
    assert 1e6 <= total <= 1e7


def test_presets_round_trip_through_json():
    for name in PRESETS:
        cfg = preset_config(name)
        assert HyperSegConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_model_info_cli_prints_counts():
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "model-info", "--preset", "hyperseg-3b", "--json"],
                         capture_output=True, text=True, check=True)
    info = json.loads(out.stdout)
    assert 3.2e9 <= info["parameters"] <= 3.6e9
    assert 0 < info["trainable"] < info["parameters"]
    assert sum(info["modules"].values()) == info["parameters"]


def test_llm4_preset_changes_only_the_llm_shape_of_the_shipped_preset():
    """The deeper-LLM experiment is the shipped preset with one change, so a run of it measures that change alone."""
    shipped, deeper = preset_config("tiny-lite0-bpe"), preset_config("tiny-lite0-bpe-llm4")
    llm = deeper.language.hf_config
    assert (llm["num_hidden_layers"], llm["hidden_size"], llm["intermediate_size"]) == (4, 256, 1024)
    assert llm["hidden_size"] // llm["num_attention_heads"] == (shipped.language.hf_config["hidden_size"]
                                                               // shipped.language.hf_config["num_attention_heads"])
    assert deeper.language.hidden_size == 256
    for part in ("vision", "pyramid", "perceiver", "predictor", "loss", "frozen"):
        assert getattr(deeper, part) == getattr(shipped, part)
