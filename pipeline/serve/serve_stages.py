"""`Stages` on the Serve app's deployments, for a per-stream actor (operators/stream_processor.py).

Neither the decoded frame nor the encoder features pass through the actor: `decode` returns a `RemoteFrame` (the
Decode DeploymentResponse and the size read from the JPEG header), which goes straight into the Encode (split) or
Fused call, and the Encode response goes straight into the VLLM and Predictor calls; Ray moves the pixels and
tensors between the replicas. What the actor sends and receives is small: the JPEG, E_Q / E_P / latents, the
state (fused) and the final masks. The per-stream state transitions are the same functions the fused path runs
(models/video_predictor.py), so both modes give the same masks.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentResponse

from models.config import HyperSegConfig
from models.postprocess import FrameResult
from models.temporal import StreamState
from models.video_predictor import (
    FrameRequest,
    apply_vllm,
    finish_frame,
    followed,
    needs_vllm,
    pool_prompts,
    start_state,
    vllm_call,
)
from operators.jpeg_header import jpeg_size
from operators.stream_processor import Stages

APP_NAME = "hyperseg"
GATEWAY = "Gateway"


@dataclass(frozen=True)
class RemoteFrame:
    """A frame decoded in the Decode deployment and left there; `shape` is all the actor needs of it."""

    response: DeploymentResponse
    shape: tuple[int, int, int]


def _pixels(frame: RemoteFrame | np.ndarray) -> DeploymentResponse | np.ndarray:
    """What to pass on for a frame: the Decode response, or pixels the actor decoded itself (H.264 packets)."""
    return frame.response if isinstance(frame, RemoteFrame) else frame


class _ServeStagesBase:
    def __init__(self, app_name: str, info_deployment: str) -> None:
        self.decoder = serve.get_deployment_handle("Decode", app_name)
        info: dict[str, Any] = serve.get_deployment_handle(info_deployment, app_name).info.remote().result()
        self.config = HyperSegConfig.from_dict(info["config"])
        self.model_id: str = info["model_id"]

    def decode(self, payload: bytes, codec: str) -> RemoteFrame:
        height, width = jpeg_size(payload)  # a payload that is not a JPEG fails here, before any stage runs
        return RemoteFrame(self.decoder.remote(payload, codec), (height, width, 3))


class SplitServeStages(_ServeStagesBase):
    def __init__(self, app_name: str = APP_NAME) -> None:
        super().__init__(app_name, "Predictor")
        self.encoder = serve.get_deployment_handle("Encode", app_name)
        self.vllm = serve.get_deployment_handle("VLLM", app_name)
        self.predictor = serve.get_deployment_handle("Predictor", app_name)

    def run(self, request: FrameRequest, adapter: str) -> tuple[FrameResult, StreamState]:
        state = start_state(request, "cpu")
        encoded = self.encoder.remote(_pixels(request.frame))  # handed on as references, never fetched here
        if needs_vllm(request, state):
            call = vllm_call(request.prompt, state, self.config)
            apply_vllm(state, self.vllm.options(multiplexed_model_id=adapter).remote(encoded, call).result())
        size = (int(request.frame.shape[0]), int(request.frame.shape[1]))
        packed, instance = self.predictor.remote(encoded, state.queries, pool_prompts(state, self.config),
                                                 request.prompt, size,
                                                 followed(state, request.prompt, self.config)).result()
        result = packed.unpack()
        finish_frame(self.config, result, instance, request.prompt, state)
        return result, state


class FusedServeStages(_ServeStagesBase):
    def __init__(self, app_name: str = APP_NAME) -> None:
        super().__init__(app_name, "Fused")
        self.fused = serve.get_deployment_handle("Fused", app_name)

    def run(self, request: FrameRequest, adapter: str) -> tuple[FrameResult, StreamState]:
        frame = _pixels(request.frame)  # a top-level argument: Serve resolves it inside the Fused replica
        packed, state = self.fused.options(multiplexed_model_id=adapter).remote(replace(request, frame=None),
                                                                                frame).result()
        return packed.unpack(), state


@dataclass(frozen=True)
class ServeStagesFactory:
    """Picklable: a stream actor calls it to get Stages for the running app, split or fused as deployed."""

    app_name: str = APP_NAME

    def __call__(self) -> Stages:
        mode = serve.get_deployment_handle(GATEWAY, self.app_name).info.remote().result()["mode"]
        return SplitServeStages(self.app_name) if mode == "split" else FusedServeStages(self.app_name)
