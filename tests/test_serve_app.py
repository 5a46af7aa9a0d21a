"""The Serve app and per-stream actors on a real local Ray: split and fused give the in-process masks, LoRA
adapters are chosen per stream, actors restore from checkpoints and are evicted when idle, /metrics has values."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from models.checkpoint import load_default_model
from models.lora_adapters import save_adapter
from operators.frame_codec import encode_jpeg
from operators.local_stages import LocalStages
from operators.prompt_spec import PromptSpec, Region
from operators.rle import decode_rle
from operators.stream_processor import FrameInput
from operators.synthetic import WorldConfig, make_clip
from pipeline.records import validate_record
from pipeline.stream_actor import StreamWorker
from conftest import free_port, require_tools

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
PROMPTS = {
    "cam-a": PromptSpec(task="referring", text="the small green triangle"),
    "cam-b": PromptSpec(task="generic", classes=("circle", "square", "triangle"), generic_mode="instance"),
    # A visual prompt carries each object's previous mask (continuity) and first-frame identity through the Predictor.
    "cam-c": PromptSpec(task="visual", regions=(Region(box=(60, 60, 140, 140)),), frame_seq=0),
}
FRAMES = 3


@pytest.fixture(scope="module")
def adapters_dir(tmp_path_factory) -> Path:
    """A second LoRA adapter, 'alt': the shipped adapter with random B matrices, so its masks differ."""
    root = tmp_path_factory.mktemp("adapters")
    model, _ = load_default_model()
    save_adapter(model, root / "alt")
    weights = root / "alt" / "adapter_model.safetensors"
    generator = torch.Generator().manual_seed(0)
    tensors = {k: torch.randn(v.shape, generator=generator) * 0.5 if "lora_B" in k else v
               for k, v in load_file(str(weights)).items()}
    save_file(tensors, str(weights))
    return root


@pytest.fixture(scope="module")
def cluster(adapters_dir):
    """One Ray for the module; metrics exported every second on a known port; both app modes deployed."""
    from pipeline.serve.app import build_app
    from pipeline.serve.settings import AppArgs

    metrics_port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, _metrics_export_port=metrics_port,
             _system_config={"metrics_report_interval_ms": 1000},
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}})
    try:
        common = {"transport_dtype": "float32", "adapters_dir": str(adapters_dir)}
        serve.run(build_app(AppArgs(mode="split", **common)), name="hs-split", route_prefix=None)
        serve.run(build_app(AppArgs(mode="fused", **common)), name="hs-fused", route_prefix=None)
        yield metrics_port
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def local_stages(adapters_dir) -> LocalStages:
    torch.set_num_threads(1)
    return LocalStages.from_checkpoint(adapters_dir=adapters_dir)


@pytest.fixture(scope="module")
def clips() -> dict[str, list[bytes]]:
    return {sid: [encode_jpeg(f) for f in make_clip(seed, "test", WorldConfig(num_frames=FRAMES + 1)).frames]
            for seed, sid in enumerate(PROMPTS)}


def frame_input(clips, stream_id: str, seq: int) -> FrameInput:
    return FrameInput(seq=seq, capture_ts=100.0 + seq, codec="jpeg", payload=clips[stream_id][seq])


def in_process(local_stages, clips, clip: str, prompt: PromptSpec, frames: int,
               key_frame_interval: int = 1) -> list[dict]:
    """The records an in-process worker makes for the first `frames` frames of `clip`."""
    worker = StreamWorker(clip, lambda: local_stages, prompt, key_frame_interval)
    return [worker.process(frame_input(clips, clip, seq)) for seq in range(frames)]


def assert_same_masks(got: dict, expected: dict) -> None:
    assert validate_record(got) is got
    assert (got["frame_seq"], got["prompt_id"], got["model_id"]) == (  # stream ids may differ
        expected["frame_seq"], expected["prompt_id"], expected["model_id"])
    assert [o["label"] for o in got["objects"]] == [o["label"] for o in expected["objects"]]
    for a, b in zip(got["objects"], expected["objects"]):
        ma, mb = decode_rle(a["rle"]), decode_rle(b["rle"])
        union = (ma | mb).sum()
        assert union == 0 or (ma & mb).sum() / union > 0.99
        assert a["score"] == pytest.approx(b["score"], abs=1e-3)


def registry_for(app: str, key_frame_interval: int = 1, **kwargs):
    from pipeline.serve.serve_stages import ServeStagesFactory
    from pipeline.stream_registry import RegistryConfig, StreamRegistry

    config = RegistryConfig(namespace=app, key_frame_interval=key_frame_interval)
    return StreamRegistry(ServeStagesFactory(app), config=config, **kwargs)


@pytest.mark.parametrize("app", ["hs-split", "hs-fused"])
def test_serve_modes_match_in_process(cluster, app, local_stages, clips):
    registry = registry_for(app, key_frame_interval=2)  # frame 1 reuses frame 0's VLLM output: both paths run
    actors = {sid: registry.get(sid, create_with=prompt) for sid, prompt in PROMPTS.items()}
    pending = {sid: [] for sid in PROMPTS}
    for seq in range(FRAMES):  # both streams in flight together: the deployments batch across them
        for sid, actor in actors.items():
            pending[sid].append(actor.process.remote(frame_input(clips, sid, seq)))
    for sid, prompt in PROMPTS.items():
        got = ray.get(pending[sid])
        assert [r["frame_seq"] for r in got] == list(range(FRAMES))
        for record, expected in zip(got, in_process(local_stages, clips, sid, prompt, FRAMES, key_frame_interval=2)):
            assert_same_masks(record, expected)
    for sid in PROMPTS:
        registry.remove(sid)


def test_garbled_frame_fails_clearly_and_keeps_the_stream(cluster, clips):
    from operators.frame_codec import FrameDecodeError

    registry = registry_for("hs-split")
    actor = registry.get("cam-g", create_with=PROMPTS["cam-a"])
    ray.get(actor.process.remote(frame_input(clips, "cam-a", 0)))
    with pytest.raises(FrameDecodeError, match="not a JPEG"):
        ray.get(actor.process.remote(FrameInput(1, 0.0, "jpeg", b"garbage")))
    assert ray.get(actor.last_seq.remote()) == 0
    assert ray.get(actor.process.remote(frame_input(clips, "cam-a", 1)))["frame_seq"] == 1
    registry.remove("cam-g")


def test_lora_adapter_is_chosen_per_stream(cluster, local_stages, clips):
    registry = registry_for("hs-split")
    alt = PromptSpec(task="referring", text="the small green triangle", adapter="alt")
    actor = registry.get("cam-alt", create_with=alt)
    got = ray.get([actor.process.remote(frame_input(clips, "cam-a", seq)) for seq in range(2)])
    expected = in_process(local_stages, clips, "cam-a", alt, 2)
    default = in_process(local_stages, clips, "cam-a", PROMPTS["cam-a"], 2)
    for record, want, other in zip(got, expected, default):
        assert_same_masks(record, want)
        assert record["objects"][0]["score"] != pytest.approx(other["objects"][0]["score"], abs=1e-4)
    registry.remove("cam-alt")


def dies_within(actor, timeout_s: float) -> bool:
    """ray.kill is asynchronous: a call made right after it may still be answered."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.get(actor.last_seq.remote(), timeout=5)
        except ray.exceptions.RayActorError:
            return True
        time.sleep(0.2)
    return False


def test_killed_actor_resumes_from_checkpoint(cluster, local_stages, clips):
    registry = registry_for("hs-split")
    actor = registry.get("cam-a", create_with=PROMPTS["cam-a"])
    ray.get([actor.process.remote(frame_input(clips, "cam-a", seq)) for seq in range(2)])
    registry.checkpoint_all()
    ray.kill(actor, no_restart=True)
    assert dies_within(actor, 30)
    revived = registry.recover("cam-a")
    assert ray.get(revived.last_seq.remote()) == 1
    record = ray.get(revived.process.remote(frame_input(clips, "cam-a", 2)))
    assert_same_masks(record, in_process(local_stages, clips, "cam-a", PROMPTS["cam-a"], 3)[2])
    registry.remove("cam-a")


def test_idle_stream_is_evicted_and_resumes(cluster, clips):
    now = [0.0]
    registry = registry_for("hs-fused", idle_timeout_s=10.0, clock=lambda: now[0])
    actor = registry.get("cam-b", create_with=PROMPTS["cam-b"])
    ray.get(actor.process.remote(frame_input(clips, "cam-b", 0)))
    now[0] = 5.0
    assert registry.evict_idle() == []
    now[0] = 20.0
    assert registry.evict_idle() == ["cam-b"] and registry.streams() == []
    with pytest.raises(ValueError):  # the named actor is gone: its process and resources are freed
        ray.get_actor(registry.actor_name("cam-b"), namespace="hs-fused")
    resumed = registry.get("cam-b")
    assert ray.get(resumed.last_seq.remote()) == 0
    assert ray.get(resumed.process.remote(frame_input(clips, "cam-b", 1)))["frame_seq"] == 1
    registry.remove("cam-b")


def test_metrics_are_scrapeable(cluster):
    from monitoring.metrics import start_metrics_server

    router_port = free_port()
    start_metrics_server(router_port, "127.0.0.1")
    registry = registry_for("hs-split")
    actor = registry.get("cam-m", create_with=PROMPTS["cam-a"])
    router = urllib.request.urlopen(f"http://127.0.0.1:{router_port}/metrics", timeout=5).read().decode()
    assert "hyperseg_active_streams 1.0" in router
    ray.get(actor.process.remote(FrameInput(0, 1.0, "jpeg", encode_jpeg(np.zeros((64, 64, 3), np.uint8)))))
    deadline = time.monotonic() + 30
    while True:  # Ray's agents report every second (metrics_report_interval_ms above)
        text = urllib.request.urlopen(f"http://127.0.0.1:{cluster}/metrics", timeout=5).read().decode()
        frames = [line for line in text.splitlines()
                  if line.startswith("ray_hyperseg_frames_processed_total{") and 'stream="cam-m"' in line]
        if frames and 'ray_hyperseg_stage_latency_seconds_count{' in text:
            break
        assert time.monotonic() < deadline, f"Ray's /metrics has no frames for cam-m: {frames}"
        time.sleep(1)
    assert float(frames[0].rsplit(" ", 1)[1]) >= 1
    stages = {line.split('stage="')[1].split('"')[0] for line in text.splitlines()
              if line.startswith("ray_hyperseg_stage_latency_seconds_count{")}
    assert {"decode", "encode", "vllm", "predictor", "frame"} <= stages
    registry.remove("cam-m")


def test_prometheus_scrapes_ray_and_the_router(cluster, tmp_path):
    """A real Prometheus with monitoring/prometheus.yml, its targets pointed at this test's Ray and router."""
    require_tools("prometheus")
    from monitoring.metrics import start_metrics_server

    router_port, prom_port = free_port(), free_port()
    start_metrics_server(router_port, "127.0.0.1")
    config = yaml.safe_load((REPO / "monitoring/prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = tmp_path / "ray_targets.json"  # what the Ray head writes in a real cluster
    targets.write_text(json.dumps([{"targets": [f"127.0.0.1:{cluster}"], "labels": {}}]))
    jobs["ray"]["file_sd_configs"][0]["files"] = [str(targets)]
    jobs["hyperseg-router"]["static_configs"][0]["targets"] = [f"127.0.0.1:{router_port}"]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))

    registry = registry_for("hs-fused")
    actor = registry.get("cam-p", create_with=PROMPTS["cam-a"])
    ray.get(actor.process.remote(FrameInput(0, 1.0, "jpeg", encode_jpeg(np.zeros((64, 64, 3), np.uint8)))))
    server = subprocess.Popen(["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
                               f"--storage.tsdb.path={tmp_path / 'data'}",
                               f"--web.listen-address=127.0.0.1:{prom_port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def query(expr: str) -> list:
            url = f"http://127.0.0.1:{prom_port}/api/v1/query?query={urllib.parse.quote(expr)}"
            try:
                return json.loads(urllib.request.urlopen(url, timeout=2).read())["data"]["result"]
            except OSError:
                return []

        wanted = {"frames": 'ray_hyperseg_frames_processed_total{stream="cam-p"}',
                  "fused latency": 'ray_hyperseg_stage_latency_seconds_count{stage="fused"}',
                  "active streams": 'hyperseg_active_streams{job="hyperseg-router"}'}
        deadline = time.monotonic() + 60
        found: dict[str, list] = {}
        while len(found) < len(wanted):
            assert time.monotonic() < deadline, f"Prometheus has not scraped {set(wanted) - set(found)}"
            found = {name: r for name, expr in wanted.items() if (r := query(expr))}
            time.sleep(1)
        assert float(found["frames"][0]["value"][1]) >= 1
        assert float(found["active streams"][0]["value"][1]) == 1  # this registry's one stream
    finally:
        server.terminate()
        server.wait(timeout=10)
        registry.remove("cam-p")
