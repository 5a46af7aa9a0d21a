"""Which parts of HyperSeg each serving stage needs, so a stage's process holds only those.

For HyperSeg-3B the LLM is 2.8 B of the 3.3 B parameters: an Encode or Predictor replica that kept it would spend
~5.6 GB (fp16) of GPU memory on weights it never runs.
"""

from __future__ import annotations

from torch import nn

from models.hyperseg import HyperSeg

STAGE_PARTS: dict[str, frozenset[str]] = {
    "encode": frozenset({"vision", "pyramid"}),
    "vllm": frozenset({"perceiver", "latents_to_llm", "temporal", "language", "query_proj", "refer_proj",
                       "class_proj", "region_proj"}),
    "predictor": frozenset({"pyramid", "predictor"}),
}


def keep_stage(model: HyperSeg, stage: str) -> HyperSeg:
    """Drop (in place) every top-level part `stage` does not run; `model` then serves only that stage."""
    if stage not in STAGE_PARTS:
        raise ValueError(f"unknown stage {stage!r}; expected one of {sorted(STAGE_PARTS)}")
    for name, _ in list(model.named_children()):
        if name not in STAGE_PARTS[stage]:
            setattr(model, name, None)
    return model


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
