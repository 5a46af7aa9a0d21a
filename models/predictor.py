"""Segmentation predictor: transformers' Mask2Former masked-attention decoder with the LLM's mask tokens as queries.

The query content is E_Q (the LLM outputs at the <seg> positions, projected to the decoder width); the query
positions are learned. Heads on every decoder layer's queries (deep supervision):
  masks       the decoder's own mask embedding MLP dotted with the pixel decoder's mask features
  refer       referring score of each query against the referring prompt embedding E_P (optionally after relation
              layers over the queries and their mask geometry, models/relation.py; optionally plus the attributes'
              agreement, `attribute_agreement`)
  classes     scores against each class-name embedding plus a background entry (open vocabulary)
  regions     scores against each visual-prompt region embedding plus a background entry
  instance    instance embeddings for video association
  boxes       normalised (cx, cy, w, h)
  attributes  (optional, training) logits of each query's object attributes, one slice per attribute
  kinematics  (optional, training) each query's object centre and velocity (units: FrameTarget.kinematics)
and, optionally, on E_P: the weight the expression puts on each entry of a query's motion descriptor (models/motion.py)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import Mask2FormerConfig
from transformers.models.mask2former.modeling_mask2former import (
    Mask2FormerMaskedAttentionDecoder,
    Mask2FormerMLPPredictionHead,
    Mask2FormerSinePositionEmbedding,
)

from models.config import PredictorConfig
from models.mask2former_init import init_mask2former_parts
from models.motion import MOTION_FEATURES
from models.pyramid_encoder import PixelFeatures
from models.relation import QueryRelations

NUM_LEVELS = 3
KINEMATICS = 4  # centre x, y and velocity x, y


@dataclass
class LayerPrediction:
    masks: torch.Tensor  # (B, Q, H/4, W/4) logits
    refer: torch.Tensor  # (B, Q, P) logits
    classes: torch.Tensor  # (B, Q, P + 1) logits, last = background; padded prompts at -inf
    regions: torch.Tensor  # (B, Q, P + 1) logits, same layout
    attributes: torch.Tensor | None = None  # (B, Q, sum(attribute_classes)) logits, when the config has the head
    kinematics: torch.Tensor | None = None  # (B, Q, KINEMATICS) centre x, y and velocity x, y, when it has that head


@dataclass
class PredictorOutput:
    layers: list[LayerPrediction]  # every decoder layer, the last one is the prediction
    instance: torch.Tensor  # (B, Q, E)
    boxes: torch.Tensor  # (B, Q, 4)
    described: torch.Tensor | None = None  # (B, P, sum(attribute_classes)) E_P's attribute logits (attribute match)
    wanted_motion: torch.Tensor | None = None  # (B, P, MOTION_FEATURES) E_P's weight on each motion descriptor entry

    @property
    def final(self) -> LayerPrediction:
        return self.layers[-1]


class PromptScoreHead(nn.Module):
    """Query-vs-prompt logits (scaled dot products) with an optional background logit per query."""

    def __init__(self, dim: int, background: bool) -> None:
        super().__init__()
        self.query_proj = nn.Linear(dim, dim)
        self.scale = dim**-0.5
        self.background = nn.Linear(dim, 1) if background else None

    def forward(self, queries: torch.Tensor, prompts: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        logits = torch.einsum("bqd,bpd->bqp", self.query_proj(queries), prompts) * self.scale
        logits = logits.masked_fill(~valid.unsqueeze(1), float("-inf"))
        if self.background is None:
            return logits
        return torch.cat([logits, self.background(queries)], dim=-1)


def attribute_agreement(queries: torch.Tensor, prompts: torch.Tensor, classes: tuple[int, ...]) -> torch.Tensor:
    """Attribute logits of the queries (B, Q, sum(classes)) and of the prompts (B, P, sum(classes)) -> (B, Q, P)
    sum over attributes of log(n_values x sum_v p_query(v) p_prompt(v)): how much likelier than chance it is that
    both name the same value of every attribute (if the attributes were independent). 0 when either side is
    uniform, so an untrained head leaves the refer logit as it is."""
    total = queries.new_zeros(queries.shape[0], queries.shape[1], prompts.shape[1], dtype=torch.float32)
    for q, p in zip(queries.float().split(list(classes), -1), prompts.float().split(list(classes), -1)):
        same = torch.einsum("bqv,bpv->bqp", q.softmax(-1), p.softmax(-1)) * q.shape[-1]
        total = total + same.clamp_min(torch.finfo(torch.float32).tiny).log()
    return total


def decoder_config(cfg: PredictorConfig, mask_feature_size: int) -> Mask2FormerConfig:
    return Mask2FormerConfig(
        hidden_dim=cfg.hidden_dim,
        mask_feature_size=mask_feature_size,
        num_attention_heads=cfg.num_heads,
        dim_feedforward=cfg.dim_feedforward,
        decoder_layers=cfg.num_layers + 1,  # transformers counts the initial mask prediction as a layer
        num_queries=cfg.num_queries,
        dropout=0.0,
        pre_norm=False,
    )


class SegmentationPredictor(nn.Module):
    def __init__(self, cfg: PredictorConfig, feature_size: int, mask_feature_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        m2f = decoder_config(cfg, mask_feature_size)
        self.position_embedder = Mask2FormerSinePositionEmbedding(num_position_features=cfg.hidden_dim // 2,
                                                                  normalize=True)
        self.input_projections = nn.ModuleList(
            [nn.Conv2d(feature_size, cfg.hidden_dim, kernel_size=1) if feature_size != cfg.hidden_dim
             else nn.Identity() for _ in range(NUM_LEVELS)]
        )
        self.level_embed = nn.Embedding(NUM_LEVELS, cfg.hidden_dim)
        self.query_position = nn.Embedding(cfg.num_queries, cfg.hidden_dim)
        self.decoder = Mask2FormerMaskedAttentionDecoder(m2f)
        init_mask2former_parts(self.decoder, m2f)
        self.relations = (QueryRelations(cfg.hidden_dim, cfg.num_heads, cfg.dim_feedforward, cfg.relation_layers)
                          if cfg.relation_layers else None)
        self.refer_head = PromptScoreHead(cfg.hidden_dim, background=False)
        self.class_head = PromptScoreHead(cfg.hidden_dim, background=True)
        self.region_head = PromptScoreHead(cfg.hidden_dim, background=True)
        self.instance_head = Mask2FormerMLPPredictionHead(cfg.hidden_dim, cfg.hidden_dim, cfg.instance_embed_dim)
        self.box_head = Mask2FormerMLPPredictionHead(cfg.hidden_dim, cfg.hidden_dim, 4)
        self.attribute_head = nn.Linear(cfg.hidden_dim, sum(cfg.attribute_classes)) if cfg.attribute_classes else None
        if cfg.refer_attribute_match and self.attribute_head is None:
            raise ValueError("refer_attribute_match needs the attribute head (PredictorConfig.attribute_classes)")
        self.kinematics_head = nn.Linear(cfg.hidden_dim, KINEMATICS) if cfg.kinematics_head else None
        self.motion_head = nn.Linear(cfg.hidden_dim, MOTION_FEATURES) if cfg.motion_head else None

    def _memory(self, pixel: PixelFeatures) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Size]]:
        """Flatten the three scales into (HW, B, C) keys with sine positions and level embeddings."""
        features, positions, sizes = [], [], []
        for level, feature in enumerate(pixel.multi_scale[:NUM_LEVELS]):
            sizes.append(feature.shape[-2:])
            pos = self.position_embedder(feature.shape, feature.device, feature.dtype, None).flatten(2)
            positions.append(pos.permute(2, 0, 1))
            projected = self.input_projections[level](feature).flatten(2) + self.level_embed.weight[level][None, :, None]
            features.append(projected.permute(2, 0, 1))
        return features, positions, sizes

    def forward(self, pixel: PixelFeatures, queries: torch.Tensor, prompts: torch.Tensor,
                prompt_valid: torch.Tensor) -> PredictorOutput:
        """queries E_Q (B, Q, D); prompts E_P (B, P, D) with validity (B, P)."""
        features, positions, sizes = self._memory(pixel)
        batch = queries.shape[0]
        out = self.decoder(
            inputs_embeds=queries.transpose(0, 1),
            multi_stage_positional_embeddings=positions,
            pixel_embeddings=pixel.mask_features,
            encoder_hidden_states=features,
            query_position_embeddings=self.query_position.weight.unsqueeze(1).expand(-1, batch, -1),
            feature_size_list=sizes,
            return_dict=True,
        )
        layers = []
        described = self.attribute_head(prompts) if self.cfg.refer_attribute_match else None
        for hidden, masks in zip(out.intermediate_hidden_states, out.masks_queries_logits):
            decoded = hidden.transpose(0, 1)
            related = decoded if self.relations is None else self.relations(decoded, masks, prompts, prompt_valid)
            attributes = self.attribute_head(decoded) if self.attribute_head is not None else None
            refer = self.refer_head(related, prompts, prompt_valid)
            if described is not None:
                agreement = attribute_agreement(attributes, described, self.cfg.attribute_classes)
                refer = refer + (self.cfg.attribute_match_weight * agreement).to(refer.dtype)
            layers.append(LayerPrediction(
                masks=masks,
                refer=refer,
                classes=self.class_head(decoded, prompts, prompt_valid),
                regions=self.region_head(decoded, prompts, prompt_valid),
                attributes=attributes,
                kinematics=self.kinematics_head(decoded) if self.kinematics_head is not None else None,
            ))
        last = out.intermediate_hidden_states[-1].transpose(0, 1)
        return PredictorOutput(layers=layers, instance=self.instance_head(last), boxes=self.box_head(last).sigmoid(),
                               described=described,
                               wanted_motion=self.motion_head(prompts) if self.motion_head is not None else None)
