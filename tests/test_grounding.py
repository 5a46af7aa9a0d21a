"""Language grounding: the referring score must depend on the expression, and a few steps on one frame must teach
the model to pick a different object for a different expression. A detached or misaligned prompt embedding (E_P
gathered from the wrong token span, text that never reaches the refer head) fails both within seconds, where a
full training run would only show flat referring metrics after an hour."""

from __future__ import annotations

import torch

from models.build import build_hyperseg
from models.config import VisualPromptConfig
from models.checkpoint import load_default_model
from models.hyperseg import HyperSeg, VLLMRequest
from models.presets import preset_config
from models.prompts import TaskPrompt
from models.training import OptimConfig, Trainer, TrainingSample
from operators.synthetic import make_clip
from operators.training_samples import sample_from_prompt

# Two attribute expressions on frame 2 of train clip 0, each naming a different object.
EXPRESSIONS = ("the pink circle", "the striped blue diamond")


def _model() -> HyperSeg:
    cfg = preset_config("tiny")
    cfg.frozen = ()
    cfg.language.train_base = True
    torch.manual_seed(0)
    return build_hyperseg(cfg)


def _samples() -> list[TrainingSample]:
    clip = make_clip(0, "train")
    by_text = {p.text: p for p in clip.prompts if p.kind == "referring"}
    assert by_text[EXPRESSIONS[0]].targets != by_text[EXPRESSIONS[1]].targets
    return [sample_from_prompt(clip, by_text[text], 2, 1, VisualPromptConfig()) for text in EXPRESSIONS]


def _refer_logits(model: HyperSeg, frame: torch.Tensor, texts: tuple[str, ...]) -> torch.Tensor:
    """(len(texts), Q) final-layer referring logits of one frame under each expression."""
    with torch.no_grad():
        encoded = model.encode([frame] * len(texts))
        out = model.vllm_step(encoded.image_tokens, encoded.pyramid,
                              [VLLMRequest(TaskPrompt("referring", text=text)) for text in texts])
        pred = model.predict(model.decode_pixels(encoded.pyramid), out.queries, out.prompts, out.prompt_valid)
    return pred.final.refer[:, :, 0]


def test_prompt_embedding_carries_the_expression_to_the_refer_logits():
    """E_P alone (E_Q held fixed and detached) must differ by expression, change the refer logits and pass
    gradients back into the LLM."""
    model = _model().eval()
    frame = _samples()[0].frames[0]
    encoded = model.encode([frame] * 2)
    out = model.vllm_step(encoded.image_tokens, encoded.pyramid,
                          [VLLMRequest(TaskPrompt("referring", text=text)) for text in EXPRESSIONS])
    pixels = model.decode_pixels(encoded.pyramid)
    queries = out.queries[:1].expand(2, -1, -1).detach()
    logits = model.predict(pixels, queries, out.prompts, out.prompt_valid).final.refer[:, :, 0]
    assert (out.prompts[0] - out.prompts[1]).abs().max() > 1e-3
    assert (logits[0] - logits[1]).abs().max() > 1e-3
    logits.sum().backward()
    embeddings = model.language.causal_lm.get_input_embeddings().weight
    assert embeddings.grad is not None and embeddings.grad.abs().sum() > 0


def test_a_few_steps_pick_a_different_object_per_expression():
    """From the shipped weights (whose masks are already good, so each object has its own query): the same frame
    under two expressions must come to rank different queries first, which only the text can cause."""
    model, _ = load_default_model()
    samples = _samples()
    torch.manual_seed(0)  # the matcher's point sampling and LoRA dropout draw from it
    trainer = Trainer(model, OptimConfig(steps=100, lr=1e-3, warmup_steps=1))
    first = trainer.train_step(samples).losses["refer"]
    for _ in range(23):
        last = trainer.train_step(samples).losses["refer"]
    assert last < 0.2 * first
    picks = _refer_logits(model.eval(), samples[0].frames[0], EXPRESSIONS).argmax(dim=-1)
    assert picks[0] != picks[1]
