"""The per-frame entry point: (frame, task prompt, state) -> (result, new state), batched across streams.

Like SAM 2's video predictor, this object owns the per-video logic; unlike it, the state is an explicit value
(`StreamState`) handed in and out, so a stream can move between processes, and frames are processed causally one at
a time: memory per stream stays constant however long the video.

`step_batch` is three batched stages plus per-stream bookkeeping, and each piece is a method of its own so a serving
layer can run the stages in separate processes (encode -> `vllm_batch` -> `predict_batch`) while the per-stream
state transitions (`start_state`, `needs_vllm`, `apply_vllm`, `pool_prompts`, `followed`, `finish_frame`) stay
with the stream: the split and the fused paths then compute the same thing by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from models import motion
from models.config import HyperSegConfig
from models.hyperseg import HyperSeg, VLLMRequest
from models.mask_grid import on_grid
from models.motion import MotionTracks
from models.postprocess import Followed, FrameResult, mask_quality, postprocess
from models.predictor import PredictorOutput
from models.prompts import TaskPrompt
from models.temporal import StreamState
from models.tracker import associate


@dataclass
class FrameRequest:
    frame: torch.Tensor | np.ndarray  # (H, W, 3) uint8 RGB
    prompt: TaskPrompt
    state: StreamState | None = None
    run_vllm: bool = True  # False: reuse the last key frame's E_Q / E_P (predictor only)


@dataclass
class VLLMCall:
    """What one stream sends into a VLLM step: its prompt and the state it carries into this frame."""

    prompt: TaskPrompt
    latents: torch.Tensor | None = None  # (N, D) local space-time injection from the previous frame
    region_features: torch.Tensor | None = None  # (R, H_llm); None for a visual prompt: pooled on this frame


@dataclass
class VLLMResult:
    """One stream's VLLM output: everything the stream's state keeps from a key frame."""

    queries: torch.Tensor  # (Q, D_pred) E_Q
    prompts: torch.Tensor  # (P, D_pred) E_P, unpadded
    latents: torch.Tensor | None  # (N, D_latent) starting latents for the next frame
    entities: tuple[str, ...]
    region_features: torch.Tensor | None  # (R, H_llm) visual prompts only


def start_state(request: FrameRequest, device: torch.device | str) -> StreamState:
    """The request's state on `device`, or a fresh one when there is none or it belongs to another prompt."""
    key = request.prompt.key()
    state = request.state
    if state is None or state.prompt_key != key:
        return StreamState(prompt_key=key)
    return state.to(device)


def needs_vllm(request: FrameRequest, state: StreamState) -> bool:
    """Key frame: asked for, or nothing to reuse yet."""
    return request.run_vllm or state.queries is None


def vllm_call(prompt: TaskPrompt, state: StreamState, cfg: HyperSegConfig) -> VLLMCall:
    """The stream's VLLM input; its latents only when the config injects them (`vllm_batch` relies on this)."""
    return VLLMCall(prompt, state.latents if cfg.temporal.inject_latents else None, state.region_features)


def apply_vllm(state: StreamState, result: VLLMResult) -> None:
    state.queries = result.queries
    state.prompts = result.prompts
    state.latents = result.latents
    state.entities = result.entities
    if result.region_features is not None:
        state.region_features = result.region_features


def pool_prompts(state: StreamState, cfg: HyperSegConfig) -> torch.Tensor:
    """This frame's E_P: pushed onto the ring and pooled over the window (global prompt aggregation)."""
    if cfg.temporal.aggregate_prompts:
        return state.push_prompts(state.prompts, cfg.temporal.window)
    return state.prompts


def followed(state: StreamState, prompt: TaskPrompt, cfg: HyperSegConfig) -> Followed | None:
    """What the visual-prompt choice follows (`postprocess.visual`): each object's mask on the previous frame, or
    on the prompt frame every grid cell its region touches (continuity); each object's instance embedding from the
    stream's first frame, from the second frame on (identity). For a referring prompt with the motion head, the
    objects followed so far (`models.motion`). None for other tasks or with all of them off."""
    p = cfg.predictor
    if prompt.task in ("referring", "reasoning") and p.motion_head:
        tracks = state.motion if state.motion is not None else MotionTracks.empty(p.motion.grid)
        return Followed(tracks=tracks, frame=state.frame_index)
    if prompt.task != "visual" or (p.continuity_power == 0 and p.identity_power == 0):
        return None
    masks = None
    if p.continuity_power != 0:
        masks = (on_grid(torch.stack(prompt.regions), p.continuity_grid) > 0 if state.previous_masks is None
                 else state.previous_masks)
    return Followed(masks=masks, identity=state.identity if p.identity_power != 0 else None)


def finish_frame(cfg: HyperSegConfig, result: FrameResult, instance: torch.Tensor, prompt: TaskPrompt,
                 state: StreamState) -> None:
    """Per-stream work after the predictor: track ids (VIS) from the chosen queries' instance embeddings
    `instance` (N, E), what the visual-prompt choice follows on the next frames (each object's mask, and its chosen
    query's embedding on the first frame), entity names, frame count."""
    result.entities = state.entities
    if result.motion_tracks is not None:
        state.motion = result.motion_tracks
    if prompt.task == "visual" and cfg.predictor.continuity_power != 0:
        state.previous_masks = on_grid(result.masks, cfg.predictor.continuity_grid) > 0.5
    if prompt.task == "visual" and cfg.predictor.identity_power != 0 and state.identity is None:
        state.identity = nn.functional.normalize(instance.float(), dim=-1)
    if prompt.task == "vis":
        labels = torch.tensor([prompt.classes.index(name) for name in result.labels], dtype=torch.long)
        ids, state.tracker = associate(cfg.tracker, state.tracker, instance, result.scores, labels)
        result.track_ids = [int(i) if i >= 0 else None for i in ids.tolist()]
    state.frame_index += 1


class HyperSegVideoPredictor:
    def __init__(self, model: HyperSeg) -> None:
        self.model = model.eval()
        self.cfg = model.cfg

    def step(self, frame: torch.Tensor | np.ndarray, prompt: TaskPrompt, state: StreamState | None = None,
             run_vllm: bool = True) -> tuple[FrameResult, StreamState]:
        return self.step_batch([FrameRequest(frame, prompt, state, run_vllm)])[0]

    @torch.no_grad()
    def step_batch(self, requests: list[FrameRequest]) -> list[tuple[FrameResult, StreamState]]:
        frames = [as_frame_tensor(r.frame) for r in requests]
        states = [start_state(r, self.model.device) for r in requests]
        encoded = self.model.encode(frames)

        key = [b for b, (r, s) in enumerate(zip(requests, states)) if needs_vllm(r, s)]
        if key:
            results = self.vllm_batch(encoded.image_tokens[key], {k: v[key] for k, v in encoded.pyramid.items()},
                                      [vllm_call(requests[b].prompt, states[b], self.cfg) for b in key])
            for b, result in zip(key, results):
                apply_vllm(states[b], result)

        pooled = [pool_prompts(s, self.cfg) for s in states]
        sizes = [(int(f.shape[0]), int(f.shape[1])) for f in frames]
        follow = [followed(s, r.prompt, self.cfg) for r, s in zip(requests, states)]
        predictions = self.predict_batch(encoded.pyramid, [s.queries for s in states], pooled,
                                         [r.prompt for r in requests], sizes, follow)
        outputs = []
        for request, state, (result, instance) in zip(requests, states, predictions):
            finish_frame(self.cfg, result, instance, request.prompt, state)
            outputs.append((result, state))
        return outputs

    @torch.no_grad()
    def vllm_batch(self, image_tokens: torch.Tensor, pyramid: dict[str, torch.Tensor],
                   calls: list[VLLMCall]) -> list[VLLMResult]:
        """FVP + LLM for a batch of streams (B, ...) -> one VLLMResult per stream."""
        model = self.model
        regions = [model.region_features(image_tokens[b], c.prompt.regions)
                   if c.prompt.task == "visual" and c.region_features is None else c.region_features
                   for b, c in enumerate(calls)]
        out = model.vllm_step(image_tokens, pyramid,
                              [VLLMRequest(c.prompt, c.latents, r) for c, r in zip(calls, regions)])
        results = []
        for b, call in enumerate(calls):
            count = int(out.prompt_valid[b].sum())
            results.append(VLLMResult(
                queries=out.queries[b], prompts=out.prompts[b, :count],
                latents=out.next_latents[b] if self.cfg.temporal.inject_latents else None, entities=out.entities[b],
                region_features=regions[b] if call.region_features is None else None,
            ))
        return results

    @torch.no_grad()
    def predict_batch(self, pyramid: dict[str, torch.Tensor], queries: list[torch.Tensor], prompts: list[torch.Tensor],
                      task_prompts: list[TaskPrompt], sizes: list[tuple[int, int]],
                      follow: list[Followed | None]) -> list[tuple[FrameResult, torch.Tensor]]:
        """Pixel decoder + masked-attention decoder + postprocess for a batch of streams; `follow` is what each
        stream's visual-prompt choice follows (`followed`).

        Returns each stream's full-resolution result and the instance embeddings (N, E) of its chosen queries."""
        model = self.model
        padded, valid = _pad(prompts)
        prediction = model.predict(model.decode_pixels(pyramid), torch.stack(queries), padded, valid)
        outputs = []
        device = prediction.final.masks.device
        for b, (prompt, size, before) in enumerate(zip(task_prompts, sizes, follow)):
            before = None if before is None else before.to(device)
            term, tracks = self._motion(prediction, b, size, before)
            result = postprocess(prediction.final, b, prompt, self.cfg.predictor, size, before, prediction.instance[b],
                                 term)
            result.motion_tracks = tracks
            outputs.append((result, prediction.instance[b][result.query_indices]))
        return outputs

    def _motion(self, prediction: PredictorOutput, b: int, size: tuple[int, int], before: Followed | None
                ) -> tuple[torch.Tensor | None, MotionTracks | None]:
        """A referring stream's motion term (Q,) on this frame and the objects it follows into the next; (None,
        None) without the motion head."""
        if before is None or before.tracks is None or prediction.wanted_motion is None:
            return None, None
        p = self.cfg.predictor
        logits = prediction.final.masks[b].detach().float().cpu()
        descriptors, tracks = motion.follow(before.tracks, logits.sigmoid() > p.mask_threshold,
                                            mask_quality(logits, p.mask_threshold), before.frame, size, p.motion)
        return motion.motion_term(prediction.wanted_motion[b, 0], descriptors, p.motion_match_weight), tracks


def as_frame_tensor(frame: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Arrays that arrive read-only (zero-copy from another process) are copied; torch needs writable memory."""
    return torch.from_numpy(np.require(frame, requirements=("C", "W"))) if isinstance(frame, np.ndarray) else frame


def _pad(prompts: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    most = max(p.shape[0] for p in prompts)
    out = prompts[0].new_zeros(len(prompts), most, prompts[0].shape[-1])
    valid = torch.zeros(len(prompts), most, dtype=torch.bool, device=out.device)
    for b, p in enumerate(prompts):
        out[b, : p.shape[0]] = p
        valid[b, : p.shape[0]] = True
    return out, valid
