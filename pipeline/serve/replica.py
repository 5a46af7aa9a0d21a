"""What every model-holding Serve replica does at start: load the model once, pick its device, size its batches.

Each replica loads the checkpoint itself (no model object crosses processes) onto cuda when the deployment was
given a GPU, else the CPU with a bounded thread count so replicas sharing a node do not oversubscribe it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from models.checkpoint import load_default_model
from models.postprocess import FrameResult
from models.stage_parts import keep_stage
from models.video_predictor import HyperSegVideoPredictor
from monitoring import metrics
from pipeline.serve.settings import AppArgs, StageSettings

TRANSPORT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def load_predictor(args: AppArgs, stage: StageSettings, part: str | None = None
                   ) -> tuple[HyperSegVideoPredictor, str]:
    """The model for a replica; `part` (encode / vllm / predictor) keeps only what that stage runs."""
    torch.set_num_threads(args.torch_threads)
    device = "cuda" if stage.num_gpus > 0 and torch.cuda.is_available() else "cpu"
    model, model_id = load_default_model(args.checkpoint, device=device)
    if part is not None:
        keep_stage(model, part)
    return HyperSegVideoPredictor(model), model_id


class ModelReplica:
    """Base of the model-holding deployments: Serve's periodic health check fails when the replica's device does
    (a lost or faulted GPU), so Serve replaces the replica instead of routing frames to it."""

    predictor: HyperSegVideoPredictor
    model_id: str

    def info(self) -> dict[str, Any]:
        """The model the app serves: what stream actors need to run the per-stream logic."""
        return {"model_id": self.model_id, "config": self.predictor.cfg.to_dict()}

    def check_health(self) -> None:
        device = self.predictor.model.device
        if device.type == "cuda":
            torch.ones(1, device=device).add_(1).item()  # raises on a faulted or lost device


def size_batches(batch_method: Any, stage: StageSettings) -> None:
    """Apply the configured batch size and wait to a `@serve.batch` method of this replica."""
    batch_method.set_max_batch_size(stage.max_batch_size)
    batch_method.set_batch_wait_timeout_s(stage.batch_wait_timeout_s)


def deployment_options(stage: StageSettings) -> dict[str, Any]:
    """`.options(...)` of a stage deployment from its settings."""
    return {
        "ray_actor_options": {"num_cpus": stage.num_cpus, "num_gpus": stage.num_gpus},
        "max_ongoing_requests": stage.max_ongoing_requests,
        "max_queued_requests": stage.max_queued_requests,
    }


@contextmanager
def timed(stage: str, items: int) -> Iterator[None]:
    """Record a batch's wall time as every item's stage latency (what each frame waits for)."""
    started = time.perf_counter()
    yield
    elapsed = time.perf_counter() - started
    for _ in range(items):
        metrics.observe_stage(stage, elapsed)


def item_results(fn: Any, *columns: list[Any]) -> list[Any]:
    """Apply `fn` per item of a batch, keeping each item's exception as its result (one bad item must not fail
    the batch); `raise_item_error` re-raises it in the caller's request."""
    out = []
    for args in zip(*columns):
        try:
            out.append(fn(*args))
        except Exception as exc:  # returned, not raised: belongs to one request
            out.append(exc)
    return out


def raise_item_error(result: Any) -> Any:
    if isinstance(result, Exception):
        raise result
    return result


@dataclass
class PackedResult:
    """A FrameResult on its way out of a replica: on the CPU, masks bit-packed (8x fewer bytes than bool)."""

    result: FrameResult  # masks emptied; the bits below hold them
    bits: np.ndarray  # np.packbits of the (N, H, W) bool masks
    shape: tuple[int, int, int]

    def unpack(self) -> FrameResult:
        count = int(np.prod(self.shape))
        masks = np.unpackbits(self.bits, count=count).reshape(self.shape).astype(bool)
        return replace(self.result, masks=torch.from_numpy(masks))


def pack_result(result: FrameResult) -> PackedResult:
    """(callers have no GPU, and full-resolution masks are the largest thing a replica returns per frame)"""
    moved = {name: getattr(result, name).cpu() for name in ("scores", "query_indices", "semantic")
             if getattr(result, name) is not None}
    masks = result.masks.cpu().numpy().astype(bool)
    return PackedResult(replace(result, masks=torch.zeros(0, dtype=torch.bool), **moved), np.packbits(masks),
                        tuple(masks.shape))
