"""Token layout of one LLM pass and the splicing of embeddings into it.

A layout is built per sample from the chat and task templates: text becomes token ids, each placeholder becomes a
run of slots whose embeddings are spliced in later (image tokens, fine-grained tokens, mask tokens, region
features). The layout also records the spans the predictor needs: the prompt spans (expression + [SEG], each class
name, each region) and the mask-token span.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedTokenizerBase

from models.templates import PLACEHOLDERS, SEG_TOKEN, TEMPLATE_SETS, ChatTemplate, TaskTemplate

IGNORE_INDEX = -100
_PLACEHOLDER = re.compile("(" + "|".join(map(re.escape, PLACEHOLDERS)) + ")")
# The text a layout writes around list items (class names, regions).
_LIST_OPEN, _LIST_SEPARATOR, _LIST_CLOSE = "[", ", ", "]"


def literal_text(template_set: str) -> list[str]:
    """Every piece of text a template set's layouts spell out (placeholders cut out), e.g. to fit a tokenizer."""
    tset = TEMPLATE_SETS[template_set]
    templates = [tset.chat.prompt(task.user) for task in tset.tasks.values()]
    templates += [task.answer for task in tset.tasks.values()]
    pieces = [piece for template in templates for piece in _PLACEHOLDER.split(template)]
    return [piece for piece in pieces if piece and piece not in PLACEHOLDERS] + [_LIST_OPEN, _LIST_SEPARATOR,
                                                                                 _LIST_CLOSE]


@dataclass
class SequenceLayout:
    ids: list[int] = field(default_factory=list)  # slots of spliced embeddings hold the pad id
    labels: list[int] = field(default_factory=list)  # answer text tokens to predict, IGNORE_INDEX elsewhere
    image: tuple[int, int] = (0, 0)  # (start, length)
    temporal: tuple[int, int] = (0, 0)
    seg: tuple[int, int] = (0, 0)
    regions: list[int] = field(default_factory=list)  # one slot per region feature
    prompt_spans: list[tuple[int, int]] = field(default_factory=list)  # [start, end) per prompt

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class Condition:
    """What fills the task placeholders of one sample."""

    text: str = ""
    classes: tuple[str, ...] = ()
    num_regions: int = 0
    entities: tuple[str, ...] = ()


@dataclass
class LayoutSizes:
    image_tokens: int
    temporal_tokens: int
    seg_tokens: int


class SequenceBuilder:
    """Builds `SequenceLayout`s for one tokenizer and slot sizes."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, sizes: LayoutSizes) -> None:
        self.tokenizer = tokenizer
        self.sizes = sizes
        self.pad_id = int(tokenizer.pad_token_id)
        self.seg_id = int(tokenizer.convert_tokens_to_ids(SEG_TOKEN))

    def _text(self, layout: SequenceLayout, text: str, is_answer: bool) -> None:
        if not text:
            return
        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        layout.ids.extend(ids)
        layout.labels.extend(ids if is_answer else [IGNORE_INDEX] * len(ids))

    def _slots(self, layout: SequenceLayout, count: int) -> tuple[int, int]:
        start = len(layout.ids)
        layout.ids.extend([self.pad_id] * count)
        layout.labels.extend([IGNORE_INDEX] * count)
        return start, count

    def _fill(self, layout: SequenceLayout, template: str, values: Condition, is_answer: bool) -> None:
        for piece in _PLACEHOLDER.split(template):
            if piece == "<image>":
                layout.image = self._slots(layout, self.sizes.image_tokens)
            elif piece == "<temporal>":
                layout.temporal = self._slots(layout, self.sizes.temporal_tokens)
            elif piece == "<seg>":
                layout.seg = self._slots(layout, self.sizes.seg_tokens)
            elif piece == "<refer>":
                start = len(layout.ids)
                self._text(layout, values.text, is_answer)
                layout.ids.append(self.seg_id)
                layout.labels.append(IGNORE_INDEX)
                layout.prompt_spans.append((start, len(layout.ids)))
            elif piece == "<cls>":
                self._names(layout, values.classes, is_answer, spans=True)
            elif piece == "<entities>":
                self._names(layout, values.entities, is_answer, spans=False)
            elif piece == "<region>":
                self._text(layout, _LIST_OPEN, is_answer)
                for i in range(values.num_regions):
                    if i:
                        self._text(layout, _LIST_SEPARATOR, is_answer)
                    start, _ = self._slots(layout, 1)
                    layout.regions.append(start)
                    layout.prompt_spans.append((start, start + 1))
                self._text(layout, _LIST_CLOSE, is_answer)
            else:
                self._text(layout, piece, is_answer)

    def _names(self, layout: SequenceLayout, names: tuple[str, ...], is_answer: bool, spans: bool) -> None:
        """`[a, b]` for a class list (each name a prompt span) or `a, b` for generated entities."""
        if spans:
            self._text(layout, _LIST_OPEN, is_answer)
        for i, name in enumerate(names):
            if i:
                self._text(layout, _LIST_SEPARATOR, is_answer)
            start = len(layout.ids)
            self._text(layout, name, is_answer)
            if spans:
                layout.prompt_spans.append((start, len(layout.ids)))
        if spans:
            self._text(layout, _LIST_CLOSE, is_answer)

    def build(
        self,
        chat: ChatTemplate,
        task: TaskTemplate,
        *,
        text: str = "",
        classes: tuple[str, ...] = (),
        num_regions: int = 0,
        entities: tuple[str, ...] | None = None,
        answer: bool = True,
    ) -> SequenceLayout:
        """The full sequence; with `answer=False` only the part before the generated entity names."""
        values = Condition(text=text, classes=classes, num_regions=num_regions, entities=entities or ())
        layout = SequenceLayout()
        self._fill(layout, chat.prompt(task.user), values, is_answer=False)
        answer_text = task.answer if answer else task.answer_before_entities()
        self._fill(layout, answer_text, values, is_answer=True)
        return layout


@dataclass
class PackedBatch:
    """Right-padded batch of layouts."""

    ids: torch.Tensor  # (B, L)
    attention_mask: torch.Tensor  # (B, L)
    labels: torch.Tensor  # (B, L)
    layouts: list[SequenceLayout]


def pack(layouts: list[SequenceLayout], pad_id: int, device: torch.device | str = "cpu") -> PackedBatch:
    length = max(len(layout) for layout in layouts)
    ids = torch.full((len(layouts), length), pad_id, dtype=torch.long)
    labels = torch.full((len(layouts), length), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(layouts), length), dtype=torch.long)
    for b, layout in enumerate(layouts):
        ids[b, : len(layout)] = torch.tensor(layout.ids)
        labels[b, : len(layout)] = torch.tensor(layout.labels)
        mask[b, : len(layout)] = 1
    return PackedBatch(ids.to(device), mask.to(device), labels.to(device), layouts)


def splice(
    embeds: torch.Tensor,
    layouts: list[SequenceLayout],
    image: torch.Tensor,
    temporal: torch.Tensor,
    seg: torch.Tensor,
    regions: list[torch.Tensor],
) -> torch.Tensor:
    """Put image (B,Ni,H), temporal (B,Nt,H), mask tokens (Q,H) and per-sample region features (R_b,H) into
    their slots of the token embeddings (B,L,H)."""
    spliced = torch.zeros_like(embeds)
    use = torch.zeros(embeds.shape[:2], dtype=torch.bool, device=embeds.device)
    for b, layout in enumerate(layouts):
        for (start, count), values in ((layout.image, image[b]), (layout.temporal, temporal[b]), (layout.seg, seg)):
            if count:
                spliced[b, start : start + count] = values.to(embeds.dtype)
                use[b, start : start + count] = True
        for slot, feature in zip(layout.regions, regions[b] if regions else ()):
            spliced[b, slot] = feature.to(embeds.dtype)
            use[b, slot] = True
    return torch.where(use.unsqueeze(-1), spliced, embeds)


def gather_span_means(hidden: torch.Tensor, layouts: list[SequenceLayout]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean LLM output over each prompt span -> (B, P_max, H) and a validity mask (B, P_max)."""
    most = max(len(layout.prompt_spans) for layout in layouts)
    out = hidden.new_zeros(len(layouts), most, hidden.shape[-1])
    valid = torch.zeros(len(layouts), most, dtype=torch.bool, device=hidden.device)
    for b, layout in enumerate(layouts):
        for p, (start, end) in enumerate(layout.prompt_spans):
            out[b, p] = hidden[b, start:end].mean(dim=0)
            valid[b, p] = True
    return out, valid


def gather_slots(hidden: torch.Tensor, layouts: list[SequenceLayout], name: str) -> torch.Tensor:
    """LLM outputs at a fixed-size slot run (`temporal` or `seg`) -> (B, n, H)."""
    spans = [getattr(layout, name) for layout in layouts]
    return torch.stack([hidden[b, start : start + count] for b, (start, count) in enumerate(spans)])
