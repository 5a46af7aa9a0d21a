"""Fused deployment: every model stage in one replica (HyperSegVideoPredictor.step_batch), for a one-GPU machine.

Nothing but the frame, the prompt and the stream's small state crosses a process boundary; batches across
streams are split by LoRA adapter (Serve model multiplexing, as in the split VLLM deployment).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from ray import serve

from models.lora_adapters import DEFAULT_ADAPTER
from models.temporal import StreamState
from models.video_predictor import FrameRequest
from operators.local_stages import LocalStages
from pipeline.serve.replica import ModelReplica, PackedResult, load_predictor, pack_result, size_batches, timed
from pipeline.serve.settings import AppArgs
from pipeline.serve.vllm import MAX_ADAPTERS_PER_REPLICA


@serve.deployment(name="Fused")
class Fused(ModelReplica):
    def __init__(self, args: AppArgs) -> None:
        self.predictor, self.model_id = load_predictor(args, args.fused)
        self.stages = LocalStages(self.predictor, self.model_id, args.adapters_dir)
        size_batches(self.step_batch, args.fused)

    @serve.multiplexed(max_num_models_per_replica=MAX_ADAPTERS_PER_REPLICA)
    async def get_adapter(self, name: str) -> str:
        return name  # LocalStages loads adapters on first use

    async def __call__(self, request: FrameRequest, frame: np.ndarray) -> tuple[PackedResult, StreamState]:
        """`frame` travels apart from the request so it can come straight from the Decode deployment."""
        return await self.step_batch(replace(request, frame=frame))

    @serve.batch
    async def step_batch(self, requests: list[FrameRequest]) -> list[tuple[PackedResult, StreamState]]:
        adapter = await self.get_adapter(serve.get_multiplexed_model_id() or DEFAULT_ADAPTER)
        with timed("fused", len(requests)):
            outputs = self.stages.run_batch(requests, adapter)
            return [(pack_result(result), state.to("cpu")) for result, state in outputs]
