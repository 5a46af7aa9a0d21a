"""Encode deployment: frames -> CLIP/SigLIP vision tokens + pyramid backbone features, batched across streams.

Its output is the biggest thing that crosses a boundary (see docs/streaming.md), so it leaves in the configured
transport dtype (float16 by default) and travels Encode -> VLLM / Predictor through Ray's object store: callers
pass the DeploymentResponse on without fetching it.
"""

from __future__ import annotations

import numpy as np
import torch
from ray import serve

from models.hyperseg import EncodedFrame
from models.video_predictor import as_frame_tensor
from pipeline.serve.replica import ModelReplica, TRANSPORT_DTYPES, load_predictor, size_batches, timed
from pipeline.serve.settings import AppArgs


def cast_encoded(encoded: EncodedFrame, b: int, dtype: torch.dtype) -> EncodedFrame:
    """Sample b of a batch as its own (1, ...) EncodedFrame on the CPU in `dtype`."""
    return EncodedFrame(encoded.image_tokens[b : b + 1].to("cpu", dtype),
                        {k: v[b : b + 1].to("cpu", dtype) for k, v in encoded.pyramid.items()})


def stack_encoded(items: list[EncodedFrame], device: torch.device) -> EncodedFrame:
    """Per-stream EncodedFrames -> one float32 batch on `device`."""
    return EncodedFrame(torch.cat([e.image_tokens for e in items]).to(device, torch.float32),
                        {k: torch.cat([e.pyramid[k] for e in items]).to(device, torch.float32)
                         for k in items[0].pyramid})


@serve.deployment(name="Encode")
class Encode(ModelReplica):
    def __init__(self, args: AppArgs) -> None:
        self.predictor, _ = load_predictor(args, args.encode, "encode")
        self.dtype = TRANSPORT_DTYPES[args.transport_dtype]
        size_batches(self.encode_batch, args.encode)

    async def __call__(self, frame: np.ndarray) -> EncodedFrame:
        return await self.encode_batch(frame)

    @serve.batch
    async def encode_batch(self, frames: list[np.ndarray]) -> list[EncodedFrame]:
        with timed("encode", len(frames)), torch.no_grad():
            encoded = self.predictor.model.encode([as_frame_tensor(f) for f in frames])
            return [cast_encoded(encoded, b, self.dtype) for b in range(len(frames))]
