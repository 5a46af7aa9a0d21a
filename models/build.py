"""Builders: a config (or preset name) -> a HyperSeg model with its tokenizer."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from models.config import HyperSegConfig
from models.hyperseg import HyperSeg
from models.presets import preset_config
from models.tokenizer import load_tokenizer


def build_hyperseg(cfg: HyperSegConfig | str, device: str | torch.device = "cpu",
                   tokenizer_dir: str | Path | None = None,
                   tokenizer: PreTrainedTokenizerBase | None = None) -> HyperSeg:
    """`device="meta"` builds the structure without allocating any weights (parameter counts, planning).

    The tokenizer is `tokenizer` when given (a freshly fitted one), else the one `cfg` names, read from
    `tokenizer_dir` unless it is the built-in byte tokenizer."""
    if isinstance(cfg, str):
        cfg = preset_config(cfg)
    if tokenizer is None and cfg.language.tokenizer != "byte" and tokenizer_dir is None:
        # Without the checkpoint's tokenizer files the structure is still buildable: the byte tokenizer stands in,
        # and the vocabulary size comes from the LLM config.
        tokenizer = load_tokenizer("byte")
    elif tokenizer is None:
        tokenizer = load_tokenizer(cfg.language.tokenizer, tokenizer_dir)
    with torch.device(device):
        model = HyperSeg(cfg, tokenizer)
    return model


def build_tiny(device: str | torch.device = "cpu") -> HyperSeg:
    return build_hyperseg("tiny", device)


def build_hyperseg_3b(device: str | torch.device = "meta", tokenizer_dir: str | Path | None = None) -> HyperSeg:
    return build_hyperseg("hyperseg-3b", device, tokenizer_dir)
