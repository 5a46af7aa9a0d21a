"""The LLM: any transformers causal LM, built from a config (or local weights), with LoRA through peft."""

from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerBase

from models.config import LanguageModelConfig


class LanguageModel(nn.Module):
    def __init__(self, cfg: LanguageModelConfig, tokenizer: PreTrainedTokenizerBase) -> None:
        super().__init__()
        self.cfg = cfg
        hf_kwargs = dict(cfg.hf_config)
        hf_kwargs["vocab_size"] = max(int(hf_kwargs.get("vocab_size", 0)), len(tokenizer))
        hf_kwargs.setdefault("pad_token_id", tokenizer.pad_token_id)
        hf_kwargs.setdefault("eos_token_id", tokenizer.eos_token_id)
        hf_config = AutoConfig.for_model(cfg.model_type, **hf_kwargs)
        model = AutoModelForCausalLM.from_config(hf_config)
        if cfg.lora is not None:
            model = get_peft_model(
                model,
                LoraConfig(
                    r=cfg.lora.rank,
                    lora_alpha=cfg.lora.alpha,
                    lora_dropout=cfg.lora.dropout,
                    target_modules=list(cfg.lora.target_modules),
                    bias="none",
                ),
            )
            if cfg.train_base:
                for param in model.parameters():
                    param.requires_grad_(True)
        self.model = model

    @property
    def causal_lm(self) -> nn.Module:
        """The transformers model itself (inside the peft wrapper when LoRA is on)."""
        return self.model.get_base_model() if self.cfg.lora is not None else self.model

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.causal_lm.get_input_embeddings()(ids)

    def hidden_states(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Last-layer outputs (B, L, H), without computing vocabulary logits."""
        decoder = self.causal_lm.get_decoder()
        return decoder(inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False).last_hidden_state

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.causal_lm.get_output_embeddings()(hidden)

    @torch.no_grad()
    def generate(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int, stop_ids: list[int]
    ) -> torch.Tensor:
        """Greedy continuation of a spliced prompt (B, L, H); returns the new token ids (B, <= max_new_tokens)."""
        return self.causal_lm.generate(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=stop_ids,
            pad_token_id=self.causal_lm.config.pad_token_id,
        )
