"""Fine-grained Visual Perceiver (FVP): fuse multi-scale pyramid features into a fixed set of latent tokens.

Per scale j:  P_hat_j = MHCA(P_{j-1}, G_p(f_j));  P_j = P_{j-1} + tanh(MLP(P_hat_j)) * P_hat_j.
The gate MLP starts at zero, so a fresh block is exactly the identity and training starts from the VLLM's own
behaviour. `gated=False` runs the authors' released variant (plain residual attention + feed-forward, final norm),
which their weights need.
"""

from __future__ import annotations

import torch
from torch import nn

from models.config import PerceiverConfig


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, mult: int) -> None:
        super().__init__(nn.LayerNorm(dim), nn.Linear(dim, dim * mult, bias=False), nn.GELU(),
                         nn.Linear(dim * mult, dim, bias=False))


class PerceiverCrossAttention(nn.Module):
    """Latents attend to [media; latents] (Flamingo's perceiver attention)."""

    def __init__(self, dim: int, num_heads: int, head_dim: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim
        inner = num_heads * head_dim
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, media: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        media, latents = self.norm_media(media), self.norm_latents(latents)
        q = self._heads(self.to_q(latents))
        k, v = (self._heads(t) for t in self.to_kv(torch.cat([media, latents], dim=1)).chunk(2, dim=-1))
        out = nn.functional.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).flatten(2))


class ConditionalGate(nn.Module):
    """tanh(MLP(x)): a token-dependent weight in (-1, 1) whose parameters start at zero."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
        for layer in (self.mlp[0], self.mlp[2]):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.mlp(x))


class PerceiverBlock(nn.Module):
    def __init__(self, cfg: PerceiverConfig) -> None:
        super().__init__()
        self.gated = cfg.gated
        self.attn = PerceiverCrossAttention(cfg.latent_dim, cfg.num_heads, cfg.head_dim)
        self.ff = FeedForward(cfg.latent_dim, cfg.ff_mult)
        self.gate = ConditionalGate(cfg.latent_dim) if cfg.gated else None

    def forward(self, media: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        if self.gate is None:
            latents = latents + self.attn(media, latents)
            return latents + self.ff(latents)
        enriched = self.attn(media, latents)
        enriched = enriched + self.ff(enriched)
        return latents + self.gate(enriched) * enriched


class FineGrainedVisualPerceiver(nn.Module):
    """Pyramid features {res3, res4, res5} + starting latents (B, N, D) -> fine-grained tokens (B, N, D)."""

    def __init__(self, cfg: PerceiverConfig, scale_channels: dict[str, int]) -> None:
        super().__init__()
        self.cfg = cfg
        self.initial_latents = nn.Parameter(torch.randn(cfg.num_latents, cfg.latent_dim) * cfg.latent_dim**-0.5)
        # G_p: a 1x1 projection of each scale into the latent width, plus a learned level embedding
        self.scale_projections = nn.ModuleDict(
            {name: nn.Conv2d(scale_channels[name], cfg.latent_dim, kernel_size=1) for name in cfg.scales}
        )
        self.level_embed = nn.Embedding(len(cfg.scales), cfg.latent_dim)
        self.blocks = nn.ModuleList([PerceiverBlock(cfg) for _ in cfg.scales])
        self.norm = None if cfg.gated else nn.LayerNorm(cfg.latent_dim)

    def start_latents(self, batch: int) -> torch.Tensor:
        return self.initial_latents.unsqueeze(0).expand(batch, -1, -1)

    def forward(self, features: dict[str, torch.Tensor], latents: torch.Tensor) -> torch.Tensor:
        for level, (name, block) in enumerate(zip(self.cfg.scales, self.blocks)):
            media = self.scale_projections[name](features[name]).flatten(2).transpose(1, 2)
            latents = block(media + self.level_embed.weight[level], latents)
        return latents if self.norm is None else self.norm(latents)
