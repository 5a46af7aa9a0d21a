"""Tokenizers: the fitted byte-level BPE merges the words it was fitted on, still encodes any text, keeps the
held-out words of the synthetic world spelt from pieces, and travels with its checkpoint."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from models.build import build_hyperseg
from models.checkpoint import (SHIPPED_DIR, TOKENIZER_FILE, CheckpointError, load_checkpoint, read_config,
                               save_checkpoint)
from models.presets import preset_config
from models.sequence import literal_text
from models.templates import PLACEHOLDERS, SEG_TOKEN, template_for
from models.tokenizer import fit_bpe_tokenizer
from operators.synthetic import WorldConfig, held_out
from operators.synthetic.vocab import COLOURS, SHAPES
from pipeline import train

TEXTS = ["the small green triangle", "the red circle left of the square", "circle", "triangle"] * 50


def test_fitted_words_are_single_tokens():
    tokenizer = fit_bpe_tokenizer(TEXTS, vocab_size=400)
    assert tokenizer.tokenize("the small green triangle") == ["the", "Ġsmall", "Ġgreen", "Ġtriangle"]
    assert tokenizer.tokenize("circle") == ["circle"]
    assert len(tokenizer) <= 400


def test_any_text_still_encodes_and_decodes():
    tokenizer = fit_bpe_tokenizer(TEXTS, vocab_size=400)
    text = "the pentagon über der Brücke, 3 × 4 🙂"
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert tokenizer.decode(ids) == text
    assert len(ids) > len(text.split())  # unseen words are spelt from smaller pieces


def test_special_tokens_are_single_ids():
    tokenizer = fit_bpe_tokenizer(TEXTS, vocab_size=400)
    ids = tokenizer(f"the red circle{SEG_TOKEN}", add_special_tokens=False).input_ids
    assert ids[-1] == tokenizer.convert_tokens_to_ids(SEG_TOKEN)
    assert len({tokenizer.pad_token_id, tokenizer.eos_token_id, ids[-1]}) == 3


def test_too_small_a_vocabulary_is_refused():
    with pytest.raises(ValueError, match="below the 256 bytes"):
        fit_bpe_tokenizer(TEXTS, vocab_size=100)


def test_literal_text_holds_no_placeholder():
    pieces = literal_text("paper")
    assert pieces and all(pieces)
    assert not any(placeholder in piece for piece in pieces for placeholder in PLACEHOLDERS)
    assert any("A chat between a curious user" in piece for piece in pieces)


def test_training_tokenizer_merges_seen_words_and_not_held_out_shapes(monkeypatch):
    monkeypatch.setattr(train, "TOKENIZER_CLIPS", 30)
    tokenizer = train.fitted_tokenizer(preset_config("tiny-lite0-bpe"), WorldConfig(height=64, width=64))
    seen_shapes = [shape for shape in SHAPES if shape not in held_out().shapes]
    for word in [*seen_shapes, *COLOURS]:
        assert len(tokenizer.tokenize(f" {word}")) == 1, word
    for word in held_out().shapes:
        assert len(tokenizer.tokenize(word)) > 1, word
        assert len(tokenizer.tokenize(f" {word}")) > 1, word


@pytest.fixture(scope="module")
def fitted_model():
    cfg = preset_config("tiny")
    cfg.language = dataclasses.replace(cfg.language, tokenizer="fitted",
                                       hf_config={**cfg.language.hf_config, "vocab_size": 400})
    torch.manual_seed(0)
    return build_hyperseg(cfg, tokenizer=fit_bpe_tokenizer(TEXTS, vocab_size=400))


def test_fitted_tokenizer_travels_with_its_checkpoint(fitted_model, tmp_path):
    save_checkpoint(fitted_model, tmp_path)
    assert (tmp_path / TOKENIZER_FILE).exists()
    loaded, report = load_checkpoint(tmp_path)
    assert report.complete
    text = "the small green triangle left of the pentagon"
    assert loaded.tokenizer(text).input_ids == fitted_model.tokenizer(text).input_ids
    assert loaded.language.model.get_input_embeddings().num_embeddings == 400


def test_checkpoint_without_its_tokenizer_is_a_clear_error(fitted_model, tmp_path):
    save_checkpoint(fitted_model, tmp_path)
    (tmp_path / TOKENIZER_FILE).unlink()
    with pytest.raises(CheckpointError, match="no tokenizer.json, and its config uses a fitted tokenizer"):
        load_checkpoint(tmp_path)


def test_shipped_tokenizer_shortens_a_referring_sequence():
    """The figure in docs/training.md: "the small striped red circle" as a referring prompt is 147 tokens with the
    shipped model's fitted tokenizer against 357 with the byte tokenizer (same template, same slots)."""
    lengths = []
    for tokenizer_dir in (SHIPPED_DIR, None):
        cfg = read_config(SHIPPED_DIR) if tokenizer_dir else preset_config("tiny-lite0")
        model = build_hyperseg(cfg, device="meta", tokenizer_dir=tokenizer_dir)
        chat, task = template_for(cfg.language.template, "referring")
        lengths.append(len(model.builder.build(chat, task, text="the small striped red circle")))
    assert lengths == [147, 357]
