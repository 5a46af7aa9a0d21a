"""Tokenizers: the project's byte-level tokenizers for its own small models, or a checkpoint's own tokenizer.

Both of the project's own cover any text (so open-vocabulary class names never fall out of the vocabulary) and need
no download; they are built with the `tokenizers` library:
  byte     256 byte symbols plus special tokens;
  fitted   a byte-level BPE fitted on the text a model is trained on, saved with its checkpoint: frequent words
           become one token each (one embedding to learn instead of a spelling to compose), any other word is
           still spelt from smaller pieces.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from models.templates import SEG_TOKEN

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"


def _with_special_tokens(core: Tokenizer) -> PreTrainedTokenizerFast:
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN)
    tokenizer.add_special_tokens({"additional_special_tokens": [SEG_TOKEN]})
    return tokenizer


def build_byte_tokenizer() -> PreTrainedTokenizerFast:
    byte_symbols = pre_tokenizers.ByteLevel.alphabet()
    vocab = {symbol: i for i, symbol in enumerate(sorted(byte_symbols))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    return _with_special_tokens(core)


def fit_bpe_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE with at most `vocab_size` entries (special tokens included), merged on `texts`.

    Merges never cross a word boundary (the GPT-2 pre-tokenisation split), and all 256 bytes stay in the
    vocabulary, so text unlike `texts` still encodes."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    specials = [EOS_TOKEN, PAD_TOKEN, SEG_TOKEN]
    if vocab_size < len(alphabet) + len(specials):
        raise ValueError(f"vocab_size {vocab_size} is below the {len(alphabet)} bytes plus {len(specials)} special "
                         f"tokens a byte-level tokenizer needs")
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=alphabet, special_tokens=specials,
                                  show_progress=False)
    core.train_from_iterator(texts, trainer)
    return _with_special_tokens(core)


def load_tokenizer(kind: str, directory: str | Path | None = None) -> PreTrainedTokenizerBase:
    """`byte` -> the built-in tokenizer; `pretrained` or `fitted` -> the tokenizer files of a local checkpoint
    directory (a fitted one is saved there by `save_checkpoint`)."""
    if kind == "byte":
        return build_byte_tokenizer()
    if directory is None:
        raise ValueError(f"a {kind} tokenizer needs the local checkpoint directory that holds its files")
    path = Path(directory)
    if not path.is_dir():
        raise FileNotFoundError(f"tokenizer directory {path} does not exist (nothing is downloaded)")
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if SEG_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [SEG_TOKEN]})
    return tokenizer
