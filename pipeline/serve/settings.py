"""Typed arguments of the Serve application builder (`serve run ray_app:app_builder mode=fused`, or `args:` in
deploy/serve_config.yaml). Replica counts, autoscaling and request bounds can also be overridden per deployment
in the Serve config file, the usual place for operators to tune them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

TransportDtype = Literal["float32", "float16", "bfloat16"]


class StageSettings(BaseModel):
    """Resources and batching of one deployment."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key in a Serve config is an error, not a default

    num_cpus: float = 0.25
    num_gpus: float = 0.0  # set > 0 where the cluster has GPUs: the model then runs on cuda
    max_batch_size: int = Field(8, ge=1)  # streams batched into one forward pass
    batch_wait_timeout_s: float = Field(0.01, ge=0)  # how long a partial batch waits for more streams
    max_ongoing_requests: int = Field(16, ge=1)  # per replica; beyond it requests queue in the caller
    max_queued_requests: int = Field(64, ge=-1)  # per caller; beyond it Serve sheds load (BackPressureError)


class AppArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["split", "fused"] = "split"  # split: four stage deployments; fused: one, for a one-GPU machine
    checkpoint: str | None = None  # model directory; None: the weights shipped in models/weights
    adapters_dir: str | None = None  # LoRA adapters other than "default": <adapters_dir>/<name>/
    # dtype of the encoder features on their way to the VLLM and predictor (split mode; see docs/streaming.md)
    transport_dtype: TransportDtype = "float16"
    torch_threads: int = Field(1, ge=1)
    decode: StageSettings = StageSettings(num_cpus=0.1, max_batch_size=16, batch_wait_timeout_s=0.005)
    encode: StageSettings = StageSettings()
    vllm: StageSettings = StageSettings(num_cpus=0.5)
    predictor: StageSettings = StageSettings()
    fused: StageSettings = StageSettings(num_cpus=0.5)
    gateway_num_cpus: float = 0.05
