"""The per-frame entry point: (frame, task prompt, state) -> (result, new state), batched across streams.

Like SAM 2's video predictor, this object owns the per-video logic; unlike it, the state is an explicit value
(`StreamState`) handed in and out, so a stream can move between processes, and frames are processed causally one at
a time: memory per stream stays constant however long the video.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from models.hyperseg import HyperSeg, VLLMRequest
from models.postprocess import FrameResult, postprocess
from models.prompts import TaskPrompt
from models.temporal import StreamState
from models.tracker import associate


@dataclass
class FrameRequest:
    frame: torch.Tensor | np.ndarray  # (H, W, 3) uint8 RGB
    prompt: TaskPrompt
    state: StreamState | None = None
    run_vllm: bool = True  # False: reuse the last key frame's E_Q / E_P (predictor only)


class HyperSegVideoPredictor:
    def __init__(self, model: HyperSeg) -> None:
        self.model = model.eval()
        self.cfg = model.cfg

    def step(self, frame: torch.Tensor | np.ndarray, prompt: TaskPrompt, state: StreamState | None = None,
             run_vllm: bool = True) -> tuple[FrameResult, StreamState]:
        return self.step_batch([FrameRequest(frame, prompt, state, run_vllm)])[0]

    @torch.no_grad()
    def step_batch(self, requests: list[FrameRequest]) -> list[tuple[FrameResult, StreamState]]:
        model, temporal = self.model, self.cfg.temporal
        frames = [torch.as_tensor(np.ascontiguousarray(r.frame)) if isinstance(r.frame, np.ndarray) else r.frame
                  for r in requests]
        states = [self._state_for(r) for r in requests]
        encoded = model.encode(frames)
        for b, (request, state) in enumerate(zip(requests, states)):
            if request.prompt.task == "visual" and state.region_features is None:
                state.region_features = model.region_features(encoded.image_tokens[b], request.prompt.regions)

        key = [b for b, (r, s) in enumerate(zip(requests, states)) if r.run_vllm or s.queries is None]
        if key:
            vllm = model.vllm_step(
                encoded.image_tokens[key], {k: v[key] for k, v in encoded.pyramid.items()},
                [VLLMRequest(requests[b].prompt, states[b].latents if temporal.inject_latents else None,
                             states[b].region_features) for b in key],
            )
            for i, b in enumerate(key):
                count = int(vllm.prompt_valid[i].sum())
                states[b].queries = vllm.queries[i]
                states[b].prompts = vllm.prompts[i, :count]
                states[b].latents = vllm.next_latents[i] if temporal.inject_latents else None
                states[b].entities = vllm.entities[i]

        queries = torch.stack([s.queries for s in states])
        pooled = [s.push_prompts(s.prompts, temporal.window) if temporal.aggregate_prompts else s.prompts
                  for s in states]
        prompts, valid = _pad(pooled)
        prediction = model.predict(model.decode_pixels(encoded.pyramid), queries, prompts, valid)

        outputs = []
        for b, (request, state) in enumerate(zip(requests, states)):
            size = (int(frames[b].shape[0]), int(frames[b].shape[1]))
            result = postprocess(prediction.final, b, request.prompt, self.cfg.predictor, size)
            result.entities = state.entities
            if request.prompt.task == "vis":
                self._track(result, prediction.instance[b], request.prompt, state)
            state.frame_index += 1
            outputs.append((result, state))
        return outputs

    def _state_for(self, request: FrameRequest) -> StreamState:
        key = request.prompt.key()
        state = request.state
        if state is None or state.prompt_key != key:
            return StreamState(prompt_key=key)
        return state.to(self.model.device)

    def _track(self, result: FrameResult, instance: torch.Tensor, prompt: TaskPrompt, state: StreamState) -> None:
        labels = torch.tensor([prompt.classes.index(name) for name in result.labels], dtype=torch.long)
        ids, state.tracker = associate(self.cfg.tracker, state.tracker, instance[result.query_indices],
                                       result.scores, labels)
        result.track_ids = [int(i) if i >= 0 else None for i in ids.tolist()]


def _pad(prompts: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    most = max(p.shape[0] for p in prompts)
    out = prompts[0].new_zeros(len(prompts), most, prompts[0].shape[-1])
    valid = torch.zeros(len(prompts), most, dtype=torch.bool, device=out.device)
    for b, p in enumerate(prompts):
        out[b, : p.shape[0]] = p
        valid[b, : p.shape[0]] = True
    return out, valid
