"""Stage replicas that keep only their own parts compute what the whole model computes."""

from __future__ import annotations

import pytest
import torch

from models.build import build_hyperseg_3b
from models.checkpoint import load_default_model
from models.prompts import TaskPrompt
from models.stage_parts import STAGE_PARTS, keep_stage, parameter_count, stage_parameter_count
from models.video_predictor import (
    FrameRequest,
    HyperSegVideoPredictor,
    apply_vllm,
    followed,
    pool_prompts,
    start_state,
    vllm_call,
)
from operators.synthetic import WorldConfig, make_clip


def test_stripped_stages_give_the_full_models_masks():
    torch.set_num_threads(1)
    frame = torch.from_numpy(make_clip(0, "test", WorldConfig(num_frames=2)).frames[0].copy())
    prompt = TaskPrompt("referring", text="the small green triangle")
    full = HyperSegVideoPredictor(load_default_model()[0])
    expected, _ = full.step(frame, prompt)
    encode, vllm, predict = (HyperSegVideoPredictor(keep_stage(load_default_model()[0], s))
                             for s in ("encode", "vllm", "predictor"))
    assert encode.model.language is None and predict.model.language is None and vllm.model.vision is None
    assert encode.model.pyramid.pixel_decoder is None and predict.model.pyramid.backbone is None
    encoded = encode.model.encode([frame])
    state = start_state(FrameRequest(frame, prompt), "cpu")
    apply_vllm(state, vllm.vllm_batch(encoded.image_tokens, encoded.pyramid, [vllm_call(prompt, state, vllm.cfg)])[0])
    result, _ = predict.predict_batch(encoded.pyramid, [state.queries], [pool_prompts(state, predict.cfg)], [prompt],
                                      [tuple(frame.shape[:2])], [followed(state, prompt, predict.cfg)])[0]
    assert torch.equal(result.masks, expected.masks) and torch.allclose(result.scores, expected.scores)


def test_3b_encode_and_predictor_replicas_do_not_hold_the_llm():
    model = build_hyperseg_3b()  # meta device: shapes only
    total = parameter_count(model)
    sizes = {stage: stage_parameter_count(model, stage) for stage in STAGE_PARTS}
    assert sizes["encode"] < 0.2 * total and sizes["predictor"] < 0.05 * total
    backbone = parameter_count(model.pyramid.backbone)
    assert sizes["predictor"] == parameter_count(model.predictor) + parameter_count(model.pyramid.pixel_decoder)
    assert sizes["encode"] == parameter_count(model.vision) + backbone
    with pytest.raises(ValueError, match="unknown stage"):
        keep_stage(model, "decode")
