"""`Stages` in this process: the model's stages run one after another on the local device.

Used by the unit tests, by `--no-ray` local runs, and inside the fused Serve deployment's replica.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.checkpoint import load_default_model
from models.config import HyperSegConfig
from models.lora_adapters import ensure_adapter, use_adapter
from models.postprocess import FrameResult
from models.temporal import StreamState
from models.video_predictor import FrameRequest, HyperSegVideoPredictor
from operators.frame_codec import FrameDecodeError, decode_jpeg


def decode_payload(payload: bytes, codec: str) -> np.ndarray:
    """A still-image payload -> (H, W, 3) uint8 RGB (packet codecs are decoded per stream, not here)."""
    if codec != "jpeg":
        raise FrameDecodeError(f"codec {codec!r} is not a still-image payload; expected 'jpeg'")
    return decode_jpeg(payload)


class LocalStages:
    def __init__(self, predictor: HyperSegVideoPredictor, model_id: str,
                 adapters_dir: str | Path | None = None) -> None:
        self.predictor = predictor
        self.config: HyperSegConfig = predictor.cfg
        self.model_id = model_id
        self.adapters_dir = adapters_dir

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path | None = None, adapters_dir: str | Path | None = None,
                        device: str = "cpu") -> "LocalStages":
        """Stages for a checkpoint directory, or the shipped model when None."""
        model, model_id = load_default_model(checkpoint, device=device)
        return cls(HyperSegVideoPredictor(model), model_id, adapters_dir)

    def decode(self, payload: bytes, codec: str) -> np.ndarray:
        return decode_payload(payload, codec)

    def run(self, request: FrameRequest, adapter: str) -> tuple[FrameResult, StreamState]:
        return self.run_batch([request], adapter)[0]

    def run_batch(self, requests: list[FrameRequest], adapter: str) -> list[tuple[FrameResult, StreamState]]:
        """Several streams that share one LoRA adapter, in one batch."""
        model = self.predictor.model
        ensure_adapter(model, adapter, self.adapters_dir)
        use_adapter(model, adapter)
        return self.predictor.step_batch(requests)
