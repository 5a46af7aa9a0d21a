"""Gateway: the app's ingress. Says which mode and model the app serves (stream actors ask it) and answers
HTTP health / info probes (GET / on the Serve HTTP port). Frames do not pass through it."""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle


@serve.deployment(name="Gateway")
class Gateway:
    def __init__(self, mode: str, model_info: DeploymentHandle, stages: dict[str, DeploymentHandle]) -> None:
        self.mode = mode
        self.model_info = model_info  # Predictor (split) or Fused: serves info()
        self.stages = stages

    async def info(self) -> dict[str, Any]:
        model = await self.model_info.info.remote()
        return {"mode": self.mode, "model_id": model["model_id"], "deployments": sorted(self.stages)}

    async def __call__(self, request: Any) -> dict[str, Any]:
        return await self.info()
