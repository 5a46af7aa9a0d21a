"""Training objective (Eq. 3-4): L = L_text + L_mask + L_cls (+ L_ins for video).

Matching and the point-sampled mask losses are transformers' Mask2Former Hungarian matcher and loss; what
HyperSeg adds on top is written here: classification against a per-sample (open) prompt list with a no-object
weight, the referring-score BCE (and, optionally, a top-1 ranking CE and a referent-over-anchor ranking term), the
answer-text CE and the contrastive instance association between frames; optionally, an attribute CE and a kinematics
L1 on the matched queries (not in the paper).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import Mask2FormerConfig
from transformers.models.mask2former.modeling_mask2former import Mask2FormerHungarianMatcher, Mask2FormerLoss

from models.config import LossConfig, PredictorConfig
from models.predictor import LayerPrediction, PredictorOutput
from models.sequence import IGNORE_INDEX


# Labels of a referring (or reasoning) frame target: the referent, and any other object shown as a negative.
REFERRED, NOT_REFERRED = 0, 1


@dataclass
class FrameTarget:
    """Ground truth of one frame: object masks (K, H, W) and, per object, the index of its prompt
    (class index for generic tasks, region index for visual prompts, REFERRED / NOT_REFERRED for referring), and
    optionally each object's attribute indices and kinematics for those auxiliary heads."""

    masks: torch.Tensor
    prompt_index: torch.Tensor  # (K,) long
    attributes: torch.Tensor | None = None  # (K, A) long, one column per PredictorConfig.attribute_classes entry
    kinematics: torch.Tensor | None = None  # (K, 4) float centre x, y and velocity x, y; NaN where unknown
    # (A,) bool: the attribute columns a referring / reasoning prompt names (LossConfig.prompt_attribute_named_only);
    # None: all of them
    named_attributes: torch.Tensor | None = None
    # (K, MOTION_FEATURES) each object's motion descriptor on this frame, from its masks since the clip's first frame
    # (models/motion.py), for the motion head
    motion: torch.Tensor | None = None
    # (K,) bool: the objects a referring / reasoning expression's anchor names ("the star" of "the shape with the same
    # colour as the star"), for the anchor ranking term (LossConfig.refer_anchor_weight); None: no anchor
    anchor: torch.Tensor | None = None


Matching = list[tuple[torch.Tensor, torch.Tensor]]  # per sample: (query indices, target indices)


def _match_logits(layer: LayerPrediction, b: int, task: str) -> torch.Tensor:
    """Logits whose softmax scores each query against each prompt, background last (for referring: the refer
    logit, then a zero logit that stands for NOT_REFERRED)."""
    if task in ("referring", "reasoning"):
        refer = layer.refer[b, :, :1]
        return torch.cat([refer, torch.zeros_like(refer)], dim=-1)  # softmax([x, 0])[0] = sigmoid(x)
    return layer.regions[b] if task == "visual" else layer.classes[b]


def _matched_rows(predicted: torch.Tensor | None, wanted: list[torch.Tensor | None], matches: Matching,
                  missing_head: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """predicted (B, Q, C) per query; wanted[b] (K_b, C') per object or None -> the matched queries' rows beside
    their objects' rows, over the batch; None when no matched object has a target. `missing_head` is the error
    when the model has no such head (predicted is None)."""
    if predicted is None:
        raise ValueError(missing_head)
    device = predicted.device
    mine, theirs = [], []
    for b, (target, (queries, objects)) in enumerate(zip(wanted, matches)):
        if target is not None and objects.numel():
            mine.append(predicted[b][queries.to(device)])
            theirs.append(target.to(device)[objects.to(device)])
    return (torch.cat(mine), torch.cat(theirs)) if mine else None


class HyperSegLoss(nn.Module):
    def __init__(self, loss: LossConfig, predictor: PredictorConfig) -> None:
        super().__init__()
        self.cfg = loss
        self.attribute_classes = predictor.attribute_classes
        m2f = Mask2FormerConfig(
            num_labels=1, class_weight=loss.class_weight, mask_weight=loss.mask_weight, dice_weight=loss.dice_weight,
            train_num_points=predictor.train_num_points, oversample_ratio=predictor.oversample_ratio,
            importance_sample_ratio=predictor.importance_sample_ratio, no_object_weight=loss.no_object_weight,
        )
        self.mask2former = Mask2FormerLoss(m2f, weight_dict={})
        self.matcher = Mask2FormerHungarianMatcher(
            cost_class=loss.class_weight, cost_mask=loss.mask_weight, cost_dice=loss.dice_weight,
            num_points=predictor.train_num_points,
        )

    def match(self, layer: LayerPrediction, targets: list[FrameTarget], tasks: list[str]) -> Matching:
        matches = []
        for b, (target, task) in enumerate(zip(targets, tasks)):
            logits = _match_logits(layer, b, task).float()
            labels = target.prompt_index.to(logits.device)
            matches.extend(self.matcher(layer.masks[b : b + 1].float(), logits[None],
                                        [target.masks.to(logits)], [labels]))
        return matches

    def layer_losses(self, layer: LayerPrediction, targets: list[FrameTarget], tasks: list[str],
                     matches: Matching) -> dict[str, torch.Tensor]:
        device = layer.masks.device
        num_masks = max(sum(int(t.masks.shape[0]) for t in targets), 1)
        mask_terms = self.mask2former.loss_masks(
            layer.masks.float(), [t.masks.to(device=device, dtype=torch.float32) for t in targets], matches, num_masks
        )
        cls_terms, refer_terms, rank_terms, anchor_terms = [], [], [], []
        for b, (target, task, (queries, objects)) in enumerate(zip(targets, tasks, matches)):
            if task in ("referring", "reasoning"):
                wanted = torch.zeros_like(layer.refer[b, :, 0])
                referred = queries.to(device)[target.prompt_index.to(device)[objects.to(device)] == REFERRED]
                wanted[referred] = 1.0
                refer_terms.append(nn.functional.binary_cross_entropy_with_logits(layer.refer[b, :, 0], wanted))
                if referred.numel():
                    rank_terms.append(-layer.refer[b, :, 0].float().log_softmax(0)[referred].mean())
                anchor = self._anchor_term(layer.refer[b, :, 0], referred, queries, objects, target)
                if anchor is not None:
                    anchor_terms.append(anchor)
                continue
            logits = (layer.regions if task == "visual" else layer.classes)[b]
            background = logits.shape[-1] - 1
            wanted = torch.full((logits.shape[0],), background, dtype=torch.long, device=device)
            wanted[queries.to(device)] = target.prompt_index.to(device)[objects.to(device)]
            weight = torch.ones(logits.shape[-1], device=device)
            weight[background] = self.cfg.no_object_weight
            cls_terms.append(nn.functional.cross_entropy(logits.float(), wanted, weight=weight))
        zero = layer.masks.new_zeros(())
        attribute = self._attribute_loss(layer, targets, matches) if self.cfg.attribute_weight else None
        kinematics = self._kinematics_loss(layer, targets, matches) if self.cfg.kinematics_weight else None
        return {
            "mask": mask_terms["loss_mask"] * self.cfg.mask_weight,
            "dice": mask_terms["loss_dice"] * self.cfg.dice_weight,
            "class": torch.stack(cls_terms).mean() * self.cfg.class_weight if cls_terms else zero,
            "refer": torch.stack(refer_terms).mean() * self.cfg.refer_weight if refer_terms else zero,
            **({"refer_rank": torch.stack(rank_terms).mean() * self.cfg.refer_rank_weight}
               if rank_terms and self.cfg.refer_rank_weight else {}),
            **({"refer_anchor": torch.stack(anchor_terms).mean() * self.cfg.refer_anchor_weight}
               if anchor_terms else {}),
            **({"attribute": attribute * self.cfg.attribute_weight} if attribute is not None else {}),
            **({"kinematics": kinematics * self.cfg.kinematics_weight} if kinematics is not None else {}),
        }

    def _anchor_term(self, refer: torch.Tensor, referred: torch.Tensor, queries: torch.Tensor, objects: torch.Tensor,
                     target: FrameTarget) -> torch.Tensor | None:
        """softplus(anchor's refer logit - referent's), mean over the (referent, anchor) pairs of matched queries: a
        2-way CE that the referent wins against the object its expression names beside it (the top-1 ranking CE counts
        the anchor as one of Q negatives, and the eval finds it is the wrong pick of a fifth of the "same colour"
        frames); None when off or the frame lacks either."""
        if not self.cfg.refer_anchor_weight or target.anchor is None or not referred.numel():
            return None
        named = queries.to(refer.device)[target.anchor.to(refer.device)[objects.to(refer.device)]]
        if not named.numel():
            return None
        scores = refer.float()
        return nn.functional.softplus(scores[named][None, :] - scores[referred][:, None]).mean()

    def _attribute_loss(self, layer: LayerPrediction, targets: list[FrameTarget], matches: Matching
                        ) -> torch.Tensor | None:
        """CE of each matched query's attribute logits against its object's attributes, mean over attributes and
        over the matched objects of the batch; None when no target carries attributes."""
        rows = _matched_rows(layer.attributes, [t.attributes for t in targets], matches,
                             "attribute_weight > 0 needs the attribute head (PredictorConfig.attribute_classes)")
        if rows is None:
            return None
        logits, labels = rows
        pieces = logits.float().split(list(self.attribute_classes), dim=-1)
        return torch.stack([nn.functional.cross_entropy(piece, labels[:, a]) for a, piece in enumerate(pieces)]).mean()

    @staticmethod
    def _kinematics_loss(layer: LayerPrediction, targets: list[FrameTarget], matches: Matching) -> torch.Tensor | None:
        """L1 between each matched query's kinematics and its object's, mean over the known (non-NaN) values of the
        batch; None when none is known."""
        rows = _matched_rows(layer.kinematics, [t.kinematics for t in targets], matches,
                             "kinematics_weight > 0 needs the kinematics head (PredictorConfig.kinematics_head)")
        if rows is None:
            return None
        predicted, wanted = rows
        known = wanted.isfinite()
        return nn.functional.l1_loss(predicted.float()[known], wanted[known]) if known.any() else None

    def forward(self, output: PredictorOutput, targets: list[FrameTarget],
                tasks: list[str]) -> tuple[dict[str, torch.Tensor], Matching]:
        """Deep supervision: every decoder layer is matched and supervised; returns the summed parts and the
        final layer's matching (for the instance association loss)."""
        totals: dict[str, torch.Tensor] = {}
        final_matches: Matching = []
        for layer in output.layers:
            final_matches = self.match(layer, targets, tasks)
            for name, value in self.layer_losses(layer, targets, tasks, final_matches).items():
                totals[name] = totals.get(name, 0.0) + value
        prompt_attribute = (self._prompt_attribute_loss(output, targets, tasks) if self.cfg.prompt_attribute_weight
                            else None)
        if prompt_attribute is not None:
            totals["prompt_attribute"] = prompt_attribute * self.cfg.prompt_attribute_weight
        motion = self._motion_loss(output, targets, tasks) if self.cfg.motion_weight else None
        if motion is not None:
            totals["motion"] = motion * self.cfg.motion_weight
        return totals, final_matches

    @staticmethod
    def _motion_loss(output: PredictorOutput, targets: list[FrameTarget], tasks: list[str]) -> torch.Tensor | None:
        """CE over the objects of each referring / reasoning frame of (E_P's motion weights . each object's motion
        descriptor), the referents the targets (mean over them), mean over the frames with a referent and another
        object; None when none has."""
        if output.wanted_motion is None:
            raise ValueError("motion_weight > 0 needs the motion head (PredictorConfig.motion_head)")
        terms = []
        for b, (target, task) in enumerate(zip(targets, tasks)):
            if task not in ("referring", "reasoning") or target.motion is None or len(target.motion) < 2:
                continue
            referred = target.prompt_index == REFERRED
            if referred.any():
                logits = target.motion.to(output.wanted_motion) @ output.wanted_motion[b, 0]
                terms.append(-logits.float().log_softmax(0)[referred.to(logits.device)].mean())
        return torch.stack(terms).mean() if terms else None

    def _prompt_attribute_loss(self, output: PredictorOutput, targets: list[FrameTarget], tasks: list[str]
                               ) -> torch.Tensor | None:
        """CE of each referring / reasoning sample's E_P attribute logits against its referents' attributes, per
        attribute over the referents of the batch (with prompt_attribute_named_only, those whose prompt names that
        attribute), then the mean over the attributes that have any; None when none has."""
        if output.described is None:
            raise ValueError("prompt_attribute_weight > 0 needs the attribute match (PredictorConfig."
                             "refer_attribute_match)")
        device = output.described.device
        logits, labels, named = [], [], []
        for b, (target, task) in enumerate(zip(targets, tasks)):
            if task not in ("referring", "reasoning") or target.attributes is None:
                continue
            referents = target.attributes[target.prompt_index == REFERRED].to(device)
            logits.append(output.described[b, :1].expand(len(referents), -1))
            labels.append(referents)
            asked = (target.named_attributes if self.cfg.prompt_attribute_named_only
                     and target.named_attributes is not None else torch.ones(referents.shape[1], dtype=torch.bool))
            named.append(asked.to(device).expand(len(referents), -1))
        if not logits:
            return None
        pieces = torch.cat(logits).float().split(list(self.attribute_classes), dim=-1)
        wanted, named = torch.cat(labels), torch.cat(named)
        losses = [nn.functional.cross_entropy(piece[named[:, a]], wanted[named[:, a], a])
                  for a, piece in enumerate(pieces) if named[:, a].any()]
        return torch.stack(losses).mean() if losses else None


def text_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Autoregressive CE on the answer text (next-token prediction; non-answer positions ignored)."""
    return nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                       ignore_index=IGNORE_INDEX)


def instance_association_loss(key: torch.Tensor, reference: torch.Tensor, key_match: tuple[torch.Tensor, torch.Tensor],
                              reference_match: tuple[torch.Tensor, torch.Tensor], temperature: float) -> torch.Tensor:
    """Contrastive association between a key and a reference frame of one clip.

    key, reference: instance embeddings (Q, E). Each object matched in both frames pulls its key-frame query towards
    its reference-frame query and away from every other reference query (InfoNCE)."""
    ref_query_of = dict(zip(reference_match[1].tolist(), reference_match[0].tolist()))
    anchors, positives = [], []
    for query, obj in zip(key_match[0].tolist(), key_match[1].tolist()):
        if obj in ref_query_of:
            anchors.append(query)
            positives.append(ref_query_of[obj])
    if not anchors:
        return key.new_zeros(())
    a = nn.functional.normalize(key[anchors], dim=-1)
    r = nn.functional.normalize(reference, dim=-1)
    logits = a @ r.T / temperature
    return nn.functional.cross_entropy(logits, torch.tensor(positives, device=key.device))
