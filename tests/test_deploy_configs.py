"""The Serve config files, the RayService and the Grafana dashboard agree with the code (no cluster needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from monitoring.metrics import METRICS
from pipeline.serve.app import DEPLOYMENTS
from pipeline.serve.settings import AppArgs

ray_schema = pytest.importorskip("ray.serve.schema")
ROOT = Path(__file__).resolve().parents[1]


def serve_configs() -> dict[str, dict]:
    rayservice = yaml.safe_load((ROOT / "deploy/kuberay/rayservice.yaml").read_text())
    return {
        "serve_config.yaml": yaml.safe_load((ROOT / "deploy/serve_config.yaml").read_text()),
        "serve_config_fused.yaml": yaml.safe_load((ROOT / "deploy/serve_config_fused.yaml").read_text()),
        "rayservice.yaml": yaml.safe_load(rayservice["spec"]["serveConfigV2"]),
    }


@pytest.mark.parametrize("name", sorted(serve_configs()))
def test_serve_config_is_valid_for_the_app(name):
    config = ray_schema.ServeDeploySchema.model_validate(serve_configs()[name])
    for app in config.applications:
        assert app.import_path == "ray_app:app_builder"
        args = AppArgs.model_validate(app.args)  # typed builder arguments: a typo fails here
        overridden = {d.name for d in app.deployments}
        assert overridden <= set(DEPLOYMENTS[args.mode]), f"{name} tunes deployments the app does not have"


def test_rayservice_serves_the_same_application():
    configs = serve_configs()
    local, cluster = configs["serve_config.yaml"]["applications"][0], configs["rayservice.yaml"]["applications"][0]
    assert {k: local[k] for k in ("name", "import_path")} == {k: cluster[k] for k in ("name", "import_path")}
    assert local["deployments"] == cluster["deployments"]
    assert AppArgs.model_validate(cluster["args"]).vllm.num_gpus >= 1  # the cluster puts the model on GPUs


def test_dashboard_queries_only_metrics_that_exist():
    dashboard = json.loads((ROOT / "monitoring/grafana_dashboard.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for name in METRICS:
        assert name in exprs, f"dashboard does not show {name}"
    for token in exprs.replace("(", " ").replace(")", " ").split():
        if token.startswith(("ray_hyperseg_", "hyperseg_")):
            base = token.split("[")[0].removeprefix("ray_")
            base = base.removesuffix("_bucket")
            assert base in METRICS, f"dashboard queries unknown metric {token}"


def test_builder_annotation_is_a_class_serve_can_validate_args_with():
    import inspect

    import ray_app

    # Serve validates `args:` into the builder's pydantic annotation only when it is a class, not a string
    # (a `from __future__ import annotations` in ray_app.py would silently hand the builder a dict).
    assert inspect.signature(ray_app.app_builder).parameters["args"].annotation is AppArgs
