"""HyperSeg: a thin model that composes the parts and exposes the three stages the pipeline places on actors.

  encode(frames)                         -> EncodedFrame   (CLIP tokens, pyramid backbone features)
  vllm_step(encoded, requests)           -> VLLMOutput     (E_Q, E_P, next fine-grained latents, entities)
  decode_pixels(pyramid) + predict(...)  -> PredictorOutput (masks, scores, instance embeddings, boxes)

Between stages only plain tensors travel. Per-stream temporal state is not held here: see video_predictor.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from models.config import HyperSegConfig
from models.image_processing import to_model_input
from models.language_model import LanguageModel
from models.perceiver import FineGrainedVisualPerceiver
from models.predictor import PredictorOutput, SegmentationPredictor
from models.prompts import TaskPrompt
from models.pyramid_encoder import PixelFeatures, PyramidEncoder
from models.sequence import (
    LayoutSizes,
    PackedBatch,
    SequenceBuilder,
    SequenceLayout,
    gather_slots,
    gather_span_means,
    pack,
    splice,
)
from models.templates import template_for
from models.temporal import TemporalAdapter
from models.vision_encoder import VisionEncoder
from models.visual_prompts import sample_region_feature


@dataclass
class EncodedFrame:
    image_tokens: torch.Tensor  # (B, Nv, H_llm) projected CLIP tokens
    pyramid: dict[str, torch.Tensor]  # res2..res5 backbone maps


@dataclass
class VLLMRequest:
    """One sample of a VLLM step: the prompt and what the stream carries into this frame."""

    prompt: TaskPrompt
    latents: torch.Tensor | None = None  # (N, D) from the previous frame (local space-time injection)
    region_features: torch.Tensor | None = None  # (R, H_llm) pooled visual-prompt features
    entities: tuple[str, ...] | None = None  # teacher-forced entity names (training); None -> generate


@dataclass
class VLLMOutput:
    queries: torch.Tensor  # (B, Q, D_pred) E_Q
    prompts: torch.Tensor  # (B, P, D_pred) E_P, padded
    prompt_valid: torch.Tensor  # (B, P)
    next_latents: torch.Tensor  # (B, N, D_latent) G_l of the fine-grained-token outputs
    entities: list[tuple[str, ...]] = field(default_factory=list)
    text_logits: torch.Tensor | None = None  # (B, L, V) when asked for (training)
    text_labels: torch.Tensor | None = None  # (B, L)


class HyperSeg(nn.Module):
    def __init__(self, cfg: HyperSegConfig, tokenizer: PreTrainedTokenizerBase) -> None:
        super().__init__()
        self.cfg = cfg
        self.tokenizer = tokenizer
        width = cfg.language.hidden_size
        pred_dim = cfg.predictor.hidden_dim
        self.vision = VisionEncoder(cfg.vision, width)
        self.pyramid = PyramidEncoder(cfg.pyramid)
        channels = dict(zip(("res2", "res3", "res4", "res5"), cfg.pyramid.channels))
        self.perceiver = FineGrainedVisualPerceiver(cfg.perceiver, channels)
        self.latents_to_llm = nn.Linear(cfg.perceiver.latent_dim, width)
        self.temporal = TemporalAdapter(width, cfg.perceiver.latent_dim)
        self.language = LanguageModel(cfg.language, tokenizer)
        self.mask_tokens = nn.Parameter(torch.zeros(cfg.predictor.num_queries, width))  # zero init, as the paper
        self.query_proj = nn.Linear(width, pred_dim)
        self.refer_proj = nn.Linear(width, pred_dim)
        self.class_proj = nn.Linear(width, pred_dim)
        self.region_proj = nn.Linear(width, pred_dim)
        self.predictor = SegmentationPredictor(cfg.predictor, cfg.pyramid.feature_size, cfg.pyramid.mask_feature_size)
        self.builder = SequenceBuilder(
            tokenizer,
            LayoutSizes(cfg.vision.num_tokens, cfg.perceiver.num_latents, cfg.predictor.num_queries),
        )
        self.apply_frozen()

    def apply_frozen(self) -> None:
        """Freeze the configured prefixes (with `trained_only`, all but those); everything else keeps peft's choice
        (LoRA only, in the LLM)."""
        only = self.cfg.trained_only
        for name, param in self.named_parameters():
            if name.startswith(self.cfg.frozen) or (only and not name.startswith(only)):
                param.requires_grad_(False)

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    @property
    def device(self) -> torch.device:
        return self.mask_tokens.device

    # ---- stage 1: encoders ----------------------------------------------------------------------------------
    def encode(self, frames: list[torch.Tensor] | torch.Tensor) -> EncodedFrame:
        """(H, W, 3) uint8 RGB frames (a list, or a (B, H, W, 3) tensor) -> CLIP tokens and pyramid features."""
        frames = [frame.to(self.device) for frame in frames]
        pyr = self.cfg.pyramid
        pyramid = self.pyramid.backbone_features(to_model_input(frames, pyr.image_size, pyr.mean, pyr.std))
        return EncodedFrame(image_tokens=self.image_tokens(frames), pyramid=pyramid)

    def image_tokens(self, frames: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """The CLIP side of encode() alone: what a visual prompt's region pooling needs from its own frame."""
        frames = [frame.to(self.device) for frame in frames]
        vis = self.cfg.vision
        return self.vision(to_model_input(frames, vis.image_size, vis.mean, vis.std))

    def region_features(self, image_tokens: torch.Tensor, regions: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Pool projected CLIP tokens (Nv, H) inside each region mask -> (R, H)."""
        side = self.cfg.vision.grid_size
        grid = image_tokens.T.reshape(-1, side, side)
        n = self.cfg.visual_prompt.num_sample_points
        return torch.stack([sample_region_feature(grid, region.to(grid.device), n) for region in regions])

    # ---- stage 2: the VLLM ----------------------------------------------------------------------------------
    def _layout(self, request: VLLMRequest, entities: tuple[str, ...] | None, answer: bool) -> SequenceLayout:
        prompt = request.prompt
        chat, task = template_for(self.cfg.language.template, prompt.task)
        return self.builder.build(chat, task, text=prompt.text, classes=prompt.classes,
                                  num_regions=len(prompt.regions), entities=entities, answer=answer)

    def _embed(self, packed: PackedBatch, image_tokens: torch.Tensor, fine_tokens: torch.Tensor,
               requests: list[VLLMRequest]) -> torch.Tensor:
        embeds = self.language.embed(packed.ids)
        regions = [r.region_features if r.region_features is not None else embeds.new_zeros(0, embeds.shape[-1])
                   for r in requests]
        return splice(embeds, packed.layouts, image_tokens, fine_tokens, self.mask_tokens, regions)

    def fine_grained_tokens(self, pyramid: dict[str, torch.Tensor], latents: list[torch.Tensor | None]) -> torch.Tensor:
        """FVP over res3..res5, starting from each stream's carried latents or the learned initial ones."""
        start = self.perceiver.start_latents(len(latents)).clone()
        for b, carried in enumerate(latents):
            if carried is not None:
                start[b] = carried.to(start)
        return self.perceiver(pyramid, start)

    def recognize_entities(self, image_tokens: torch.Tensor, fine_llm: torch.Tensor,
                           request: VLLMRequest) -> tuple[str, ...]:
        """Hybrid entity recognition: the LLM names the entities present, parsed against the class list."""
        _, task = template_for(self.cfg.language.template, request.prompt.task)
        packed = pack([self._layout(request, None, answer=False)], self.builder.pad_id, self.device)
        embeds = self._embed(packed, image_tokens, fine_llm, [request])
        stop = self.tokenizer(task.entity_stop(), add_special_tokens=False).input_ids[:1]
        new_ids = self.language.generate(embeds, packed.attention_mask, self.cfg.language.max_entity_tokens,
                                         stop + [int(self.tokenizer.eos_token_id)])
        text = self.tokenizer.decode(new_ids[0], skip_special_tokens=True).split(task.entity_stop())[0]
        return parse_entities(text, request.prompt.classes)

    def vllm_step(self, image_tokens: torch.Tensor, pyramid: dict[str, torch.Tensor], requests: list[VLLMRequest],
                  with_logits: bool = False) -> VLLMOutput:
        fine = self.fine_grained_tokens(pyramid, [r.latents for r in requests])
        fine_llm = self.latents_to_llm(fine)
        entities: list[tuple[str, ...]] = []
        for b, request in enumerate(requests):
            wants_names = request.prompt.task in ("generic", "vis")
            if not wants_names:
                entities.append(())
            elif not self.cfg.language.recognize_entities:
                entities.append(request.prompt.classes)
            elif request.entities is not None:
                entities.append(request.entities)
            elif request.prompt.recognize_entities:
                entities.append(self.recognize_entities(image_tokens[b : b + 1], fine_llm[b : b + 1], request))
            else:
                entities.append(request.prompt.classes)
        layouts = [self._layout(r, names, answer=True) for r, names in zip(requests, entities)]
        packed = pack(layouts, self.builder.pad_id, self.device)
        hidden = self.language.hidden_states(self._embed(packed, image_tokens, fine_llm, requests),
                                             packed.attention_mask)
        span_means, valid = gather_span_means(hidden, layouts)
        prompts = torch.stack([self._project_prompts(r.prompt.task, span_means[b]) for b, r in enumerate(requests)])
        return VLLMOutput(
            queries=self.query_proj(gather_slots(hidden, layouts, "seg")),
            prompts=prompts,
            prompt_valid=valid,
            next_latents=self.temporal.next_latents(gather_slots(hidden, layouts, "temporal")),
            entities=entities,
            text_logits=self.language.logits(hidden) if with_logits else None,
            text_labels=packed.labels if with_logits else None,
        )

    def _project_prompts(self, task: str, span_means: torch.Tensor) -> torch.Tensor:
        if task in ("generic", "vis"):
            return self.class_proj(span_means)
        if task == "visual":
            return self.region_proj(span_means)
        return self.refer_proj(span_means)

    # ---- stage 3: pixel decoder + predictor -----------------------------------------------------------------
    def decode_pixels(self, pyramid: dict[str, torch.Tensor]) -> PixelFeatures:
        return self.pyramid.decode_pixels(pyramid)

    def predict(self, pixel: PixelFeatures, queries: torch.Tensor, prompts: torch.Tensor,
                prompt_valid: torch.Tensor) -> PredictorOutput:
        return self.predictor(pixel, queries, prompts, prompt_valid)


def parse_entities(text: str, classes: tuple[str, ...]) -> tuple[str, ...]:
    """Generated 'a, b, c' -> the listed class names it mentions, in order, without repeats."""
    by_lower = {name.lower(): name for name in classes}
    found: list[str] = []
    for piece in text.split(","):
        name = by_lower.get(piece.strip().lower())
        if name is not None and name not in found:
            found.append(name)
    return tuple(found)
