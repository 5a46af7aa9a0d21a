"""Which parts of HyperSeg each serving stage needs, so a stage's process holds only those.

For HyperSeg-3B the LLM is 2.8 B of the 3.3 B parameters: an Encode or Predictor replica that kept it would spend
~5.6 GB (fp16) of GPU memory on weights it never runs.
"""

from __future__ import annotations

from torch import nn

from models.hyperseg import HyperSeg

# Module names (one level of nesting allowed: the pyramid encoder's backbone runs in Encode, its pixel decoder in
# the Predictor; for HyperSeg-3B the Swin-B backbone alone is 87M parameters).
STAGE_PARTS: dict[str, frozenset[str]] = {
    "encode": frozenset({"vision", "pyramid.backbone"}),
    "vllm": frozenset({"perceiver", "latents_to_llm", "temporal", "language", "query_proj", "refer_proj",
                       "class_proj", "region_proj"}),
    "predictor": frozenset({"pyramid.pixel_decoder", "predictor"}),
}


def keep_stage(model: HyperSeg, stage: str) -> HyperSeg:
    """Drop (in place) every part `stage` does not run; `model` then serves only that stage."""
    if stage not in STAGE_PARTS:
        raise ValueError(f"unknown stage {stage!r}; expected one of {sorted(STAGE_PARTS)}")
    parts = STAGE_PARTS[stage]
    for name, child in list(model.named_children()):
        if name in parts:
            continue
        inner = {part.split(".", 1)[1] for part in parts if part.startswith(name + ".")}
        if not inner:
            setattr(model, name, None)
            continue
        for child_name, _ in list(child.named_children()):
            if child_name not in inner:
                setattr(child, child_name, None)
    return model


def stage_parameter_count(model: nn.Module, stage: str) -> int:
    """Parameters a replica of `stage` holds."""
    return sum(parameter_count(model.get_submodule(part)) for part in STAGE_PARTS[stage])


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
