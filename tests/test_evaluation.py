"""Evaluation: `eval --json` reports every headline metric on a 0..1 scale, the shipped model stays above a floor
on a few test clips, and the ablation switches (key frames, temporal parts) do what they say."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models.checkpoint import load_default_model
from models.video_predictor import HyperSegVideoPredictor
from operators.evaluation import EvalConfig, _oracle, ablations, evaluate, overridden, pick_outcome
from operators.frame_codec import decode_jpeg, encode_jpeg
from operators.synthetic import WorldConfig, make_clip
from pipeline.evaluate import main as evaluate_command

ROOT = Path(__file__).resolve().parents[1]
HEADLINE = ("referring_jf", "reasoning_jf", "vos_jf", "image_giou", "image_ciou", "panoptic_pq", "semantic_miou")
# Floors for the shipped model on the two clips below, about half of what it scores there (referring 0.34, VOS 0.59,
# image gIoU 0.23, panoptic PQ 0.35, semantic mIoU 0.55 when written) and far above the ~0.02 of untrained weights,
# so a broken model, pipeline or metric shows.
FLOORS = {"referring_jf": 0.15, "vos_jf": 0.25, "image_giou": 0.10, "panoptic_pq": 0.15, "semantic_miou": 0.25}


@pytest.fixture(scope="module")
def report():
    """The real command, as a user runs it, on two short test clips."""
    command = [sys.executable, "-m", "pipeline.cli", "eval", "--json", "--clips", "2", "--frames", "4", "--threads", "1"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, "--json prints exactly one line"
    return json.loads(lines[0])


@pytest.mark.slow
def test_json_has_every_headline_metric_in_range(report):
    assert report["model"] == "synthetic-tiny" and report["split"] == "test" and report["clips"] == 2
    assert report["object_score_threshold"] == load_default_model()[0].cfg.predictor.object_score_threshold
    assert report["distinct_visual_queries"] is True
    for key in HEADLINE:
        assert report[key] is not None and 0.0 <= report[key] <= 1.0, key
    assert report["referring_count"] > 0 and report["vos_count"] > 0
    assert all(0.0 <= row.get("jf", row.get("giou")) <= 1.0 for row in report["per_kind"].values())
    assert any(kind.startswith("reasoning/") for kind in report["per_kind"])
    assert set(report["language_picks"]) == {"referring", "reasoning"}
    kinds = {kind for kind in report["per_kind"] if kind.startswith(("referring/", "reasoning/"))}
    assert set(report["language_picks_per_kind"]) == kinds
    for shares in [*report["language_picks"].values(), *report["language_picks_per_kind"].values()]:
        assert set(shares) <= {"referent", "anchor", "other_object", "no_object", "empty", "absent_empty",
                               "absent_mask"}
        assert sum(shares.values()) == pytest.approx(1.0)


@pytest.mark.slow
def test_shipped_model_scores_above_its_floor(report):
    for key, floor in FLOORS.items():
        assert report[key] >= floor, f"{key} {report[key]:.3f} < floor {floor}"


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    return HyperSegVideoPredictor(load_default_model()[0])


def test_vllm_runs_only_on_key_frames(predictor, monkeypatch):
    calls = []
    original = predictor.model.vllm_step
    monkeypatch.setattr(predictor.model, "vllm_step", lambda *a, **k: calls.append(1) or original(*a, **k))
    cfg = EvalConfig(clips=1, world=WorldConfig(num_frames=4), tasks=("visual",), key_frame_interval=2)
    metrics = evaluate(predictor, cfg)
    assert len(calls) == 2  # frames 0 and 2; frames 1 and 3 reuse E_Q / E_P
    assert metrics["vos_jf"] is not None and metrics["referring_jf"] is None


def test_overridden_switches_and_restores_even_on_error(predictor):
    temporal = predictor.cfg.temporal
    before = (temporal.aggregate_prompts, temporal.inject_latents)
    with pytest.raises(RuntimeError), overridden(temporal, aggregate_prompts=False, inject_latents=True):
        assert (temporal.aggregate_prompts, temporal.inject_latents) == (False, True)
        raise RuntimeError("the block fails")
    assert (temporal.aggregate_prompts, temporal.inject_latents) == before


def test_choice_ablation_scores_vos_four_ways_and_restores_the_config(predictor):
    selection = predictor.cfg.predictor
    before = (selection.continuity_power, selection.identity_power)
    rows = ablations(predictor, EvalConfig(clips=1, world=WorldConfig(num_frames=3)), ("choice",))
    assert set(rows) == {"choice=continuity+identity", "choice=continuity", "choice=identity", "choice=appearance"}
    assert all(row["vos_jf"] is not None and row["referring_jf"] is None for row in rows.values())
    assert (selection.continuity_power, selection.identity_power) == before
    with pytest.raises(ValueError, match="unknown ablation kinds"):
        ablations(predictor, EvalConfig(clips=1), ("colour",))


def test_visual_choice_flags_turn_the_joint_assignment_the_absence_threshold_and_identity_off(capsys):
    argv = ["--json", "--clips", "1", "--frames", "2", "--tasks", "visual", "--threads", "1"]
    assert evaluate_command(argv) == 0
    shipped = json.loads(capsys.readouterr().out)
    assert shipped["distinct_visual_queries"] is True and shipped["absence_threshold"] == 1e-6
    assert shipped["identity_power"] == 12.0
    off = ["--shared-visual-queries", "--absence-threshold", "0", "--identity-power", "0"]
    assert evaluate_command(argv + off) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["distinct_visual_queries"] is False and report["absence_threshold"] == 0
    assert report["identity_power"] == 0
    assert report["vos_jf"] is not None


def test_referring_absence_threshold_flag_empties_masks_scored_below_it(capsys):
    """Above every possible score (scores are probabilities), every referring mask is empty: a frame then scores
    J = 1 where the referent is out of view and 0 where it shows, so referring J is the mean over expressions of
    their share of frames without the referent, counted here from the clips' ground truth."""
    argv = ["--json", "--clips", "2", "--frames", "8", "--tasks", "referring", "--threads", "1",
            "--referring-absence-threshold", "1.5"]
    assert evaluate_command(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["referring_absence_threshold"] == 1.5
    shares = [float(np.mean([not clip.masks[t, list(p.targets)].any() for t in range(8)]))
              for clip in (make_clip(seed, "test", WorldConfig(num_frames=8)) for seed in (0, 1))
              for p in clip.prompts if p.kind == "referring"]
    assert report["referring_count"] == len(shares)
    assert report["referring_j"] == pytest.approx(float(np.mean(shares)))


def test_bad_eval_config_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown eval tasks"):
        EvalConfig(tasks=("colouring",))
    with pytest.raises(ValueError, match=">= 1"):
        EvalConfig(key_frame_interval=0)
    with pytest.raises(ValueError, match="jpeg_quality must be in 1..100"):
        EvalConfig(jpeg_quality=0)


def test_jpeg_quality_feeds_the_model_coded_frames(predictor, monkeypatch):
    seen = []
    original = predictor.step_batch
    monkeypatch.setattr(predictor, "step_batch", lambda requests: seen.append(requests[0].frame) or original(requests))
    cfg = EvalConfig(clips=1, world=WorldConfig(num_frames=2), tasks=("visual",), jpeg_quality=30)
    assert evaluate(predictor, cfg)["jpeg_quality"] == 30
    raw = make_clip(0, "test", cfg.world).frames
    assert len(seen) == 2
    for frame, rendered in zip(seen, raw):
        assert np.array_equal(frame, decode_jpeg(encode_jpeg(rendered, 30)))
        error = np.abs(frame.astype(int) - rendered).mean()
        assert 0 < error < 10  # coded: not the rendered pixels, but close to them


def test_overlap_threshold_flag_overrides_the_shipped_value(capsys):
    argv = ["--json", "--clips", "1", "--frames", "2", "--tasks", "generic", "--threads", "1"]
    assert evaluate_command(argv) == 0
    assert json.loads(capsys.readouterr().out)["overlap_threshold"] == 0.5
    assert evaluate_command(argv + ["--overlap-threshold", "0.8"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["overlap_threshold"] == 0.8 and report["panoptic_pq"] is not None


def test_oracle_takes_the_candidate_with_the_highest_iou():
    gt = np.zeros((4, 4), dtype=bool)
    gt[:2, :2] = True  # 4 pixels
    half, wide, none = gt.copy(), np.zeros_like(gt), np.zeros_like(gt)
    half[1] = False  # IoU 2/4
    wide[:2] = True  # IoU 4/8
    none[3, 3] = True  # IoU 0
    wider = wide.copy()
    wider[2, :] = True  # IoU 4/12
    assert np.array_equal(_oracle(np.stack([none, wider, half, wide]), gt), half)  # the first of the 0.5 ties
    assert np.array_equal(_oracle(np.stack([none, wider]), gt), wider)


def test_pick_outcome_says_which_object_a_referring_mask_covers():
    """Three 1-pixel-wide objects in a 4x4 frame, the referent object 1; picks built by hand."""
    objects = np.zeros((3, 4, 4), dtype=bool)
    objects[0, 0, :], objects[1, 1, :], objects[2, 2, :] = True, True, True
    pick = np.zeros((4, 4), dtype=bool)
    assert pick_outcome(pick, objects, (1,)) == "empty"
    pick[3, 0] = True  # on no object
    assert pick_outcome(pick, objects, (1,)) == "no_object"
    pick[1, :2] = True  # two pixels of the referent
    assert pick_outcome(pick, objects, (1,)) == "referent"
    pick[0, :3] = True  # three pixels of object 0: it overlaps that one most
    assert pick_outcome(pick, objects, (1,)) == "other_object"
    assert pick_outcome(pick, objects, (0, 1)) == "referent"  # several referents: any of them
    assert pick_outcome(pick, objects, (1,), anchors=(0,)) == "anchor"  # object 0 is the one the expression names
    assert pick_outcome(pick, objects, (1,), anchors=(2,)) == "other_object"
    gone = objects.copy()
    gone[1] = False  # the referent out of view
    assert pick_outcome(pick, gone, (1,)) == "absent_mask"
    assert pick_outcome(np.zeros_like(pick), gone, (1,)) == "absent_empty"


def test_referring_candidates_flag_adds_oracle_scores_and_keeps_the_headline(capsys):
    """The headline scores the first candidate, so it is the same with 1 and 4 candidates; the oracle, the best of
    four on every frame, can only be as good or better."""
    argv = ["--json", "--clips", "1", "--frames", "3", "--tasks", "referring", "reasoning", "image", "--threads", "1"]
    assert evaluate_command(argv) == 0
    one = json.loads(capsys.readouterr().out)
    assert one["referring_candidates"] == 1 and "referring_oracle_jf" not in one
    assert evaluate_command(argv + ["--referring-candidates", "4"]) == 0
    four = json.loads(capsys.readouterr().out)
    assert four["referring_candidates"] == 4
    for name, oracle in (("referring_jf", "referring_oracle_jf"), ("reasoning_jf", "reasoning_oracle_jf"),
                         ("image_giou", "image_oracle_giou")):
        assert four[name] == one[name]
        assert one[name] <= four[oracle] <= 1.0
    assert four["referring_oracle_jf"] > four["referring_jf"]
