"""Temporal adapter and the per-stream state it carries from frame to frame.

Global prompt aggregation: the prompt embeddings E_P of the current frame are pooled (adaptive average over time)
with those of the previous frames, T in all. Local space-time injection: the LLM outputs at the fine-grained-token
positions of frame t-1, projected by G_l, are the perceiver's starting latents for frame t.

`StreamState` is everything a stream needs to continue: a few hundred KB for the 3B model. It serialises to bytes
with safetensors (tensors + a JSON header), never pickle, so it can cross processes and machines safely.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from models.motion import MotionTracks

STATE_VERSION = 1
_META_KEY = "__meta__"


class TemporalAdapter(nn.Module):
    """G_l and the pooling of prompt embeddings over a window of frames."""

    def __init__(self, llm_width: int, latent_dim: int) -> None:
        super().__init__()
        self.to_latents = nn.Linear(llm_width, latent_dim)  # G_l

    def next_latents(self, fine_grained_outputs: torch.Tensor) -> torch.Tensor:
        return self.to_latents(fine_grained_outputs)

    @staticmethod
    def aggregate(history: torch.Tensor) -> torch.Tensor:
        """(T, P, D) prompt embeddings of the last T frames -> (P, D) by adaptive average pooling over time."""
        return nn.functional.adaptive_avg_pool1d(history.permute(1, 2, 0), 1).squeeze(-1)


@dataclass
class TrackerState:
    embeddings: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0))  # (K, E) EMA per live track
    ids: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))  # (K,)
    labels: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))  # (K,) class index
    misses: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))  # frames unmatched
    next_id: int = 1


@dataclass
class StreamState:
    """Per-stream temporal state. Tensors are None until the first frame fills them."""

    prompt_key: str = ""
    frame_index: int = 0
    latents: torch.Tensor | None = None  # (N, D) starting latents for the next frame (G_l output)
    prompt_history: torch.Tensor | None = None  # (t <= T, P, D_pred) last prompt embeddings, oldest first
    region_features: torch.Tensor | None = None  # (R, H_llm) visual-prompt features from the prompt frame
    queries: torch.Tensor | None = None  # (Q, D_pred) E_Q of the last key frame, reused between key frames
    prompts: torch.Tensor | None = None  # (P, D_pred) E_P of the last key frame
    entities: tuple[str, ...] = ()  # entity names recognised on the last key frame (generic tasks)
    previous_masks: torch.Tensor | None = None  # (R, g, g) bool, visual prompts: each object's last mask on a grid
    identity: torch.Tensor | None = None  # (R, E) unit, visual prompts: each object's query embedding, first frame
    tracker: TrackerState = field(default_factory=TrackerState)
    motion: MotionTracks | None = None  # referring with the motion head: the candidate objects followed so far
    version: int = STATE_VERSION

    def push_prompts(self, prompts: torch.Tensor, window: int) -> torch.Tensor:
        """Append this frame's E_P (P, D) to the ring (keeping the last `window`) and return the pooled E_P."""
        frame = prompts.detach().clone().unsqueeze(0)
        if self.prompt_history is None or self.prompt_history.shape[1:] != prompts.shape:
            self.prompt_history = frame
        else:
            self.prompt_history = torch.cat([self.prompt_history, frame])[-window:]
        history = torch.cat([self.prompt_history[:-1], prompts.unsqueeze(0)])  # keep the current frame's gradient
        return TemporalAdapter.aggregate(history)

    def to(self, device: torch.device | str) -> "StreamState":
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in moved.items():
            if isinstance(value, torch.Tensor):
                moved[name] = value.to(device)
        tracker = self.tracker
        moved["tracker"] = TrackerState(
            tracker.embeddings.to(device), tracker.ids.to(device), tracker.labels.to(device),
            tracker.misses.to(device), tracker.next_id,
        )
        return StreamState(**moved)

    def to_bytes(self) -> bytes:
        tensors: dict[str, torch.Tensor] = {}
        meta = {"version": self.version, "prompt_key": self.prompt_key, "frame_index": self.frame_index,
                "next_id": self.tracker.next_id, "entities": list(self.entities)}
        for name in ("latents", "prompt_history", "region_features", "queries", "prompts", "previous_masks",
                     "identity"):
            value = getattr(self, name)
            if value is not None:
                tensors[name] = value.detach().cpu().clone().contiguous()
        for name in ("embeddings", "ids", "labels", "misses"):
            tensors[f"tracker.{name}"] = getattr(self.tracker, name).detach().cpu().clone().contiguous()
        if self.motion is not None:
            tensors["motion.rows"] = self.motion.rows.clone().contiguous()
            tensors["motion.masks"] = self.motion.masks.clone().contiguous()
        tensors[_META_KEY] = torch.frombuffer(bytearray(json.dumps(meta).encode()), dtype=torch.uint8)
        return st_save(tensors)

    @classmethod
    def from_bytes(cls, data: bytes) -> "StreamState":
        try:
            tensors = st_load(data)
            meta = json.loads(bytes(tensors.pop(_META_KEY).tolist()).decode())
        except Exception as exc:  # safetensors raises its own error types for malformed input
            raise ValueError(f"not a serialised StreamState: {exc}") from exc
        if meta.get("version") != STATE_VERSION:
            raise ValueError(f"StreamState version {meta.get('version')} is not supported (expected {STATE_VERSION})")
        tracker = TrackerState(
            embeddings=tensors.pop("tracker.embeddings"), ids=tensors.pop("tracker.ids"),
            labels=tensors.pop("tracker.labels"), misses=tensors.pop("tracker.misses"), next_id=meta["next_id"],
        )
        motion = (MotionTracks(tensors.pop("motion.rows"), tensors.pop("motion.masks")) if "motion.rows" in tensors
                  else None)
        return cls(prompt_key=meta["prompt_key"], frame_index=meta["frame_index"], entities=tuple(meta["entities"]),
                   tracker=tracker, motion=motion, **tensors)
