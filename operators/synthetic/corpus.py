"""The words of a split: what a tokenizer fitted for models trained on the world reads."""

from __future__ import annotations

from .config import WorldConfig
from .world import DEFAULT_CONFIG, iter_split


def split_texts(split: str, clips: int, config: WorldConfig = DEFAULT_CONFIG) -> list[str]:
    """The expressions and listed class names of the first `clips` clips of `split` (class names alone, as a
    class list spells each)."""
    texts: list[str] = []
    for clip in iter_split(split, config, count=clips):
        for prompt in clip.prompts:
            if prompt.text:
                texts.append(prompt.text)
            texts.extend(prompt.classes)
    return texts
