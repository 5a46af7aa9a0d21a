"""Tokenizers: the project's byte-level tokenizer for its own small models, or a checkpoint's own tokenizer.

The byte-level one covers any text (so open-vocabulary class names never fall out of the vocabulary) and needs no
download: it is 256 byte symbols plus special tokens, built with the `tokenizers` library.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from models.templates import SEG_TOKEN

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"


def build_byte_tokenizer() -> PreTrainedTokenizerFast:
    byte_symbols = pre_tokenizers.ByteLevel.alphabet()
    vocab = {symbol: i for i, symbol in enumerate(sorted(byte_symbols))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN)
    tokenizer.add_special_tokens({"additional_special_tokens": [SEG_TOKEN]})
    return tokenizer


def load_tokenizer(kind: str, directory: str | Path | None = None) -> PreTrainedTokenizerBase:
    """`byte` -> the built-in tokenizer; `pretrained` -> the tokenizer files of a local checkpoint directory."""
    if kind == "byte":
        return build_byte_tokenizer()
    if directory is None:
        raise ValueError("a pretrained tokenizer needs the local checkpoint directory that holds its files")
    path = Path(directory)
    if not path.is_dir():
        raise FileNotFoundError(f"tokenizer directory {path} does not exist (nothing is downloaded)")
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if SEG_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [SEG_TOKEN]})
    return tokenizer
