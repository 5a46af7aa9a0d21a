"""Predictor deployment: pixel decoder + masked-attention decoder + postprocess -> full-resolution masks.

Per frame it takes the stream's E_Q and pooled E_P (small, from the stream's actor) and the frame's encoder
features (large, straight from the Encode deployment through the object store), batched across streams.
"""

from __future__ import annotations

import torch
from ray import serve

from models.hyperseg import EncodedFrame
from models.postprocess import Followed
from models.prompts import TaskPrompt
from pipeline.serve.encode import stack_encoded
from pipeline.serve.replica import ModelReplica, PackedResult, load_predictor, pack_result, size_batches, timed
from pipeline.serve.settings import AppArgs


@serve.deployment(name="Predictor")
class Predictor(ModelReplica):
    def __init__(self, args: AppArgs) -> None:
        self.predictor, self.model_id = load_predictor(args, args.predictor, "predictor")
        size_batches(self.predict_batch, args.predictor)

    async def __call__(self, encoded: EncodedFrame, queries: torch.Tensor, prompts: torch.Tensor,
                       prompt: TaskPrompt, size: tuple[int, int],
                       follow: Followed | None) -> tuple[PackedResult, torch.Tensor]:
        return await self.predict_batch(encoded, queries, prompts, prompt, size, follow)

    @serve.batch
    async def predict_batch(self, encoded: list[EncodedFrame], queries: list[torch.Tensor],
                            prompts: list[torch.Tensor], task_prompts: list[TaskPrompt],
                            sizes: list[tuple[int, int]],
                            follow: list[Followed | None]) -> list[tuple[PackedResult, torch.Tensor]]:
        with timed("predictor", len(sizes)):
            device = self.predictor.model.device
            batch = stack_encoded(encoded, device)
            outputs = self.predictor.predict_batch(batch.pyramid, [q.to(device) for q in queries],
                                                   [p.to(device) for p in prompts], task_prompts, sizes, follow)
            return [(pack_result(result), instance.cpu()) for result, instance in outputs]
