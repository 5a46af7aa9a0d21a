"""Parameter names of the authors' released HyperSeg-3B (LLaVA/Mipha layout, detectron2 Swin and Mask2Former)
mapped onto this project's names. Rules are data: (pattern, replacement), first match wins; `None` marks weights
the released checkpoint carries but this model does not use. Fused attention projections are split by
`FUSED_SPLITS` into three tensors.

Read from the authors' module definitions (github.com/congvvc/HyperSeg); not validated on the real 6.9 GB files,
which cannot be fetched here: the load report lists every name that did not land so a user can see any gap.
"""

from __future__ import annotations

import re

# Names are canonical: our state-dict names with peft's "base_model.model." and ".base_layer" taken out.
RULES: list[tuple[str, str | None]] = [
    # LLM (Phi) and its head; LoRA is merged in the release, so these are the base weights
    (r"^model\.(embed_tokens|layers|final_layernorm)\.(.*)$", r"language.model.model.\1.\2"),
    (r"^lm_head\.(.*)$", r"language.model.lm_head.\1"),
    # vanilla encoder (Hugging Face SigLIP inside Mipha's tower wrapper) and projector
    (r"^model\.vision_tower\.vision_tower\.vision_model\.head\..*$", None),
    (r"^model\.vision_tower\.vision_tower\.(vision_model\..*)$", r"vision.tower.\1"),
    (r"^model\.mm_projector\.(\d)\.(.*)$", r"vision.projector.\1.\2"),
    # pyramid encoder: detectron2 Swin -> transformers Swin
    (r"^model\.vision_tower_mask\.patch_embed\.proj\.(.*)$", r"pyramid.backbone.swin.embeddings.patch_embeddings.projection.\1"),
    (r"^model\.vision_tower_mask\.patch_embed\.norm\.(.*)$", r"pyramid.backbone.swin.embeddings.norm.\1"),
    (r"^model\.vision_tower_mask\.layers\.(\d+)\.blocks\.(\d+)\.norm1\.(.*)$",
     r"pyramid.backbone.swin.encoder.layers.\1.blocks.\2.layernorm_before.\3"),
    (r"^model\.vision_tower_mask\.layers\.(\d+)\.blocks\.(\d+)\.norm2\.(.*)$",
     r"pyramid.backbone.swin.encoder.layers.\1.blocks.\2.layernorm_after.\3"),
    (r"^model\.vision_tower_mask\.layers\.(\d+)\.blocks\.(\d+)\.attn\.relative_position_bias_table$",
     r"pyramid.backbone.swin.encoder.layers.\1.blocks.\2.attention.relative_position_bias.relative_position_bias_table"),
    (r"^model\.vision_tower_mask\.layers\.(\d+)\.blocks\.(\d+)\.attn\.relative_position_index$", None),
    (r"^model\.vision_tower_mask\.layers\.(\d+)\.blocks\.(\d+)\.attn\.qkv\.(.*)$",
     r"pyramid.backbone.swin.encoder.layers.\1.blocks.\2.attention.{qkv}_proj.\3"),
    (r"^model\.vision_tower_mask\.layers\.(\d+)\.blocks\.(\d+)\.attn\.proj\.(.*)$",
     r"pyramid.backbone.swin.encoder.layers.\1.blocks.\2.attention.o_proj.\3"),
    (r"^model\.vision_tower_mask\.layers\.(\d+)\.blocks\.(\d+)\.mlp\.(fc\d)\.(.*)$",
     r"pyramid.backbone.swin.encoder.layers.\1.blocks.\2.mlp.\3.\4"),
    (r"^model\.vision_tower_mask\.layers\.(\d+)\.downsample\.(.*)$", r"pyramid.backbone.swin.encoder.layers.\1.downsample.\2"),
    (r"^model\.vision_tower_mask\.norm(\d)\.(.*)$", r"pyramid.backbone.hidden_states_norms.stage{n+1}.\2"),
    # pixel decoder: detectron2 MSDeformAttnPixelDecoder -> transformers Mask2FormerPixelDecoder
    (r"^pixel_decoder\.input_proj\.(.*)$", r"pyramid.pixel_decoder.input_projections.\1"),
    (r"^pixel_decoder\.transformer\.level_embed$", r"pyramid.pixel_decoder.level_embed"),
    (r"^pixel_decoder\.transformer\.encoder\.layers\.(\d+)\.self_attn\.(.*)$", r"pyramid.pixel_decoder.encoder.layers.\1.self_attn.\2"),
    (r"^pixel_decoder\.transformer\.encoder\.layers\.(\d+)\.norm1\.(.*)$", r"pyramid.pixel_decoder.encoder.layers.\1.self_attn_layer_norm.\2"),
    (r"^pixel_decoder\.transformer\.encoder\.layers\.(\d+)\.norm2\.(.*)$", r"pyramid.pixel_decoder.encoder.layers.\1.final_layer_norm.\2"),
    (r"^pixel_decoder\.transformer\.encoder\.layers\.(\d+)\.linear(\d)\.(.*)$", r"pyramid.pixel_decoder.encoder.layers.\1.fc\2.\3"),
    (r"^pixel_decoder\.mask_features\.(.*)$", r"pyramid.pixel_decoder.mask_projection.\1"),
    (r"^pixel_decoder\.(adapter_\d|layer_\d)\.(.*)$", r"pyramid.pixel_decoder.\1.\2"),
    # segmentation predictor: detectron2 masked-attention decoder -> transformers decoder
    (r"^predictor\.transformer_self_attention_layers\.(\d+)\.self_attn\.in_proj_(weight|bias)$",
     r"predictor.decoder.layers.\1.self_attn.{qkv}_proj.\2"),
    (r"^predictor\.transformer_self_attention_layers\.(\d+)\.self_attn\.out_proj\.(.*)$",
     r"predictor.decoder.layers.\1.self_attn.out_proj.\2"),
    (r"^predictor\.transformer_self_attention_layers\.(\d+)\.norm\.(.*)$", r"predictor.decoder.layers.\1.self_attn_layer_norm.\2"),
    (r"^predictor\.transformer_cross_attention_layers\.(\d+)\.multihead_attn\.(.*)$", r"predictor.decoder.layers.\1.cross_attn.\2"),
    (r"^predictor\.transformer_cross_attention_layers\.(\d+)\.norm\.(.*)$", r"predictor.decoder.layers.\1.cross_attn_layer_norm.\2"),
    (r"^predictor\.transformer_ffn_layers\.(\d+)\.linear(\d)\.(.*)$", r"predictor.decoder.layers.\1.fc\2.\3"),
    (r"^predictor\.transformer_ffn_layers\.(\d+)\.norm\.(.*)$", r"predictor.decoder.layers.\1.final_layer_norm.\2"),
    (r"^predictor\.decoder_norm\.(.*)$", r"predictor.decoder.layernorm.\1"),
    (r"^predictor\.mask_embed\.layers\.(\d)\.(.*)$", r"predictor.decoder.mask_predictor.mask_embedder.\1.0.\2"),
    (r"^predictor\.query_embed\.(.*)$", r"predictor.query_position.\1"),
    (r"^predictor\.level_embed\.(.*)$", r"predictor.level_embed.\1"),
    (r"^predictor\.input_proj\.(\d)\.(.*)$", r"predictor.input_projections.\1.\2"),
    (r"^predictor\.query_feat\..*$", None),  # query content comes from the LLM's mask tokens instead
    # HyperSeg's own parts
    (r"^seg_query$", r"mask_tokens"),
    (r"^seg_query_projector\.(.*)$", r"query_proj.\1"),
    (r"^SEG_token_projector\.(.*)$", r"refer_proj.\1"),
    (r"^class_name_projector\.(.*)$", r"class_proj.\1"),
    (r"^region_projector\.(.*)$", r"region_proj.\1"),
    (r"^temporal_query$", r"perceiver.initial_latents"),
    (r"^expanded_seg_query_project\.(.*)$", r"latents_to_llm.\1"),
    (r"^temporal_query_project\.(.*)$", r"temporal.to_latents.\1"),
    (r"^local_project\.(\d)\.(.*)$", r"perceiver.scale_projections.res{n+3}.\2"),
    (r"^level_embed\.(.*)$", r"perceiver.level_embed.\1"),
    (r"^mgvp_layers\.layers\.(\d)\.0\.(.*)$", r"perceiver.blocks.\1.attn.\2"),
    (r"^mgvp_layers\.layers\.(\d)\.1\.(.*)$", r"perceiver.blocks.\1.ff.\2"),
    (r"^mgvp_layers\.norm\.(.*)$", r"perceiver.norm.\1"),
]

_COMPILED = [(re.compile(pattern), replacement) for pattern, replacement in RULES]
_INDEXED = re.compile(r"\{n\+(\d)\}")


def map_released_name(name: str) -> tuple[str, ...] | None:
    """Released name -> our canonical name(s); () = known but unused; None = no rule matches.

    Fused q/k/v tensors map to three names (q, k, v order)."""
    for pattern, replacement in _COMPILED:
        match = pattern.match(name)
        if not match:
            continue
        if replacement is None:
            return ()
        offset = _INDEXED.search(replacement)
        if offset:  # "{n+k}": the first group shifted by k (detectron2 counts stages from another origin)
            replacement = _INDEXED.sub(str(int(match.group(1)) + int(offset.group(1))), replacement)
        target = match.expand(replacement)
        if "{qkv}" in target:
            return tuple(target.replace("{qkv}", part) for part in ("q", "k", "v"))
        return (target,)
    return None
