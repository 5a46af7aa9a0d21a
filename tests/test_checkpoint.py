"""Checkpoint I/O: the project's format round-trips; gaps are reported clearly; only safetensors are read; the
released-name mapping lands tensors where they belong."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from models.build import build_tiny
from models.checkpoint import CheckpointError, load_checkpoint, load_released, save_checkpoint
from models.released_names import map_released_name


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_tiny()


def test_round_trip_is_exact(model, tmp_path):
    save_checkpoint(model, tmp_path)
    loaded, report = load_checkpoint(tmp_path)
    assert report.complete
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert json.loads((tmp_path / "config.json").read_text())["config"]["name"] == "tiny"


def test_missing_and_unexpected_tensors_are_reported(model, tmp_path):
    save_checkpoint(model, tmp_path)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    del weights["query_proj.weight"]
    weights["extra.head.weight"] = torch.zeros(2)
    save_file({k: v.contiguous() for k, v in weights.items() if k != "language.model.base_model.model.lm_head.weight"},
              str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(tmp_path)
    message = str(error.value)
    assert "missing from the checkpoint" in message and "query_proj.weight" in message
    assert "unexpected in the checkpoint" in message and "extra.head.weight" in message
    _, report = load_checkpoint(tmp_path, strict=False)
    assert "query_proj.weight" in report.missing and "extra.head.weight" in report.unexpected


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist .nothing is downloaded"):
        load_checkpoint(tmp_path / "nowhere")


@pytest.mark.parametrize("suffix", [".bin", ".pt", ".ckpt"])
def test_pickle_files_are_refused(tmp_path, suffix):
    (tmp_path / f"pytorch_model{suffix}").write_bytes(b"\x80\x04not really")
    with pytest.raises(CheckpointError, match="only safetensors"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="only safetensors"):
        load_checkpoint(tmp_path / f"pytorch_model{suffix}")


def test_released_name_rules():
    assert map_released_name("model.layers.3.self_attn.q_proj.weight") == ("language.model.model.layers.3.self_attn.q_proj.weight",)
    assert map_released_name("model.vision_tower_mask.norm0.weight") == ("pyramid.backbone.hidden_states_norms.stage1.weight",)
    assert map_released_name("local_project.2.weight") == ("perceiver.scale_projections.res5.weight",)
    assert map_released_name("model.vision_tower_mask.layers.1.blocks.0.attn.qkv.weight") == tuple(
        f"pyramid.backbone.swin.encoder.layers.1.blocks.0.attention.{p}_proj.weight" for p in "qkv")
    assert map_released_name("predictor.query_feat.weight") == ()
    assert map_released_name("something.new") is None


def test_released_directory_loads_by_mapping(tmp_path):
    torch.manual_seed(1)
    model = build_tiny()
    sd = model.state_dict()
    prefix = "pyramid.backbone.swin.encoder.layers.0.blocks.0.attention."
    q, k, v = (sd[f"{prefix}{p}_proj.weight"].clone() for p in "qkv")
    released = {
        "seg_query": torch.randn_like(model.mask_tokens),
        "model.layers.0.self_attn.q_proj.weight": torch.randn_like(
            sd["language.model.base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"]),
        "model.vision_tower_mask.layers.0.blocks.0.attn.qkv.weight": torch.cat([q + 1, k + 2, v + 3]),
        "predictor.query_feat.weight": torch.zeros(3, 3),
        "brand_new.weight": torch.zeros(2),
        "temporal_query": torch.zeros(5, 5),  # wrong shape
    }
    save_file(released, str(tmp_path / "model-00001-of-00001.safetensors"))
    report = load_released(model, tmp_path)
    assert report.loaded == 5  # mask tokens, one q_proj, and q/k/v split out of one fused tensor
    assert torch.equal(model.mask_tokens, released["seg_query"])
    lm = model.language.causal_lm
    assert torch.equal(lm.model.layers[0].self_attn.q_proj.base_layer.weight,
                       released["model.layers.0.self_attn.q_proj.weight"])
    new = model.state_dict()
    assert torch.equal(new[f"{prefix}k_proj.weight"], k + 2)
    assert report.ignored == ["predictor.query_feat.weight"] and report.unexpected == ["brand_new.weight"]
    assert len(report.mismatched) == 1 and "temporal_query" in report.mismatched[0]
    assert "perceiver.initial_latents" in report.missing and not report.complete
    assert "missing from the checkpoint" in report.summary()
