"""Relation layers for the refer score (not in the paper): each query read beside the others and their mask geometry.

Referring and reasoning expressions often name an object by comparison: "the circle left of the square", "the
largest shape", "the shape with the same colour as the star". The paper's refer score is a dot product of each query
state with the prompt embedding, so whatever the comparison needs must already sit in each query state alone. Here
the decoder's query states first get an embedding of their own mask's geometry (size, centre, spread), then pass
through a few self-attention layers over all queries and the prompt tokens, and the refer head scores the result.

The geometry is read from the mask logits without gradient: the refer loss teaches the score to use the masks, not
the masks to please the score.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.mask2former.modeling_mask2former import Mask2FormerMLPPredictionHead

GEOMETRY = 5  # square root of the area, centre x, y, spread x, y (fractions of the frame)


def mask_geometry(mask_logits: torch.Tensor) -> torch.Tensor:
    """(B, Q, h, w) logits -> (B, Q, GEOMETRY) of each query's soft mask (its sigmoid).

    Centre and spread (standard deviation) weigh the cell centres by the mask's share of its total, so a uniformly
    faint mask reads as the whole frame with no area; a mask of exact zeros is read the same way. Cells far outside a
    sure mask still weigh a little (sigmoid(-20) = 2e-9)."""
    prob = mask_logits.detach().float().sigmoid()
    h, w = prob.shape[-2:]
    mass = prob.sum((-2, -1), keepdim=True)
    weights = torch.where(mass > 0, prob / mass.clamp_min(torch.finfo(prob.dtype).tiny), 1.0 / (h * w))
    xs = (torch.arange(w, device=prob.device, dtype=prob.dtype) + 0.5) / w
    ys = (torch.arange(h, device=prob.device, dtype=prob.dtype) + 0.5) / h
    columns, rows = weights.sum(-2), weights.sum(-1)  # (B, Q, w), (B, Q, h), each summing to 1
    centre_x, centre_y = (columns * xs).sum(-1), (rows * ys).sum(-1)
    spread_x = (columns * (xs - centre_x[..., None]) ** 2).sum(-1).sqrt()
    spread_y = (rows * (ys - centre_y[..., None]) ** 2).sum(-1).sqrt()
    side = (mass[..., 0, 0] / (h * w)).sqrt()
    return torch.stack([side, centre_x, centre_y, spread_x, spread_y], dim=-1).to(mask_logits.dtype)


class QueryRelations(nn.Module):
    """Self-attention over the queries (each with its geometry embedding added) and the prompt tokens."""

    def __init__(self, dim: int, num_heads: int, dim_feedforward: int, num_layers: int) -> None:
        super().__init__()
        self.geometry = Mask2FormerMLPPredictionHead(GEOMETRY, dim, dim, num_layers=2)
        layer = nn.TransformerEncoderLayer(dim, num_heads, dim_feedforward, dropout=0.0, batch_first=True)
        self.layers = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)

    def forward(self, queries: torch.Tensor, mask_logits: torch.Tensor, prompts: torch.Tensor,
                prompt_valid: torch.Tensor) -> torch.Tensor:
        """queries (B, Q, D), mask_logits (B, Q, h, w), prompts (B, P, D) with validity (B, P) -> (B, Q, D)."""
        count = queries.shape[1]
        tokens = torch.cat([queries + self.geometry(mask_geometry(mask_logits)), prompts], dim=1)
        padding = torch.cat([prompt_valid.new_zeros(queries.shape[:2]), ~prompt_valid], dim=1)
        return self.layers(tokens, src_key_padding_mask=padding)[:, :count]
