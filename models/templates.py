"""Chat and task templates, as data: one set per checkpoint family.

Placeholders are spliced with embeddings by models/sequence.py:
  <image>     projected CLIP tokens         <temporal>  FVP fine-grained tokens
  <seg>       the learned mask tokens       <refer>     the expression followed by [SEG]
  <cls>       "[name, name, ...]"           <region>    "[<region>, ...]": one pooled visual-prompt feature each
  <entities>  the entity names the LLM generates (hybrid entity recognition) or is taught
"""

from __future__ import annotations

from dataclasses import dataclass

SEG_TOKEN = "[SEG]"
PLACEHOLDERS = ("<image>", "<temporal>", "<seg>", "<refer>", "<cls>", "<region>", "<entities>")


@dataclass(frozen=True)
class ChatTemplate:
    system: str
    user_prefix: str
    assistant_prefix: str
    separator: str  # closes the system line and the assistant turn
    bos: str = ""

    def prompt(self, user_message: str) -> str:
        """Everything up to where the assistant's answer starts."""
        return f"{self.bos}{self.system}{self.separator}{self.user_prefix}{user_message} {self.assistant_prefix}"


@dataclass(frozen=True)
class TaskTemplate:
    user: str  # visual preamble, instruction and condition placeholder
    answer: str  # teacher-forced answer; contains <seg>, and <entities> for generic tasks

    def answer_before_entities(self) -> str:
        """Answer text the LLM is fed before it generates the entity names."""
        return self.answer.split("<entities>")[0]

    def entity_stop(self) -> str:
        """Literal that follows <entities> in the answer: generation stops there."""
        rest = self.answer.split("<entities>")[1]
        return rest.split("<seg>")[0].strip()[:1] or "\n"


@dataclass(frozen=True)
class TemplateSet:
    chat: ChatTemplate
    tasks: dict[str, TaskTemplate]  # keys: referring, reasoning, generic, visual


_PAPER_VISUAL = "This is an image <image>\n<temporal>\n"

TEMPLATE_SETS: dict[str, TemplateSet] = {
    # The task instructions of the paper (Sec. 3.1); used by the project's own checkpoints.
    "paper": TemplateSet(
        chat=ChatTemplate(
            system="A chat between a curious user and an artificial intelligence assistant.",
            user_prefix="USER: ",
            assistant_prefix="ASSISTANT:",
            separator="\n",
        ),
        tasks={
            "referring": TaskTemplate(
                user=_PAPER_VISUAL + "Can you perform referring or reasoning segmentation according to the "
                "language expression? <refer>",
                answer=" Sure, the segmentation result is <seg>",
            ),
            "reasoning": TaskTemplate(
                user=_PAPER_VISUAL + "Can you perform referring or reasoning segmentation according to the "
                "language expression? <refer>",
                answer=" Sure, the segmentation result is <seg>",
            ),
            "generic": TaskTemplate(
                user=_PAPER_VISUAL + "Please segment all the positive objects according to the following "
                "potential categories. <cls>",
                answer=" It contains <entities>. The segmentation result is <seg>",
            ),
            "visual": TaskTemplate(
                user=_PAPER_VISUAL + "Please segment according to the given visual region reference <region>",
                answer=" Sure, the segmentation result is <seg>",
            ),
        },
    ),
    # What the released HyperSeg-3B evaluation scripts feed (Phi chat, "<|endoftext|>" separator, no BOS).
    "hyperseg-3b-release": TemplateSet(
        chat=ChatTemplate(
            system="A chat between a curious user and an artificial intelligence assistant. The assistant gives "
            "helpful, detailed, and polite answers to the user's questions.",
            user_prefix="USER: ",
            assistant_prefix="ASSISTANT:",
            separator="<|endoftext|>",
        ),
        tasks={
            "referring": TaskTemplate(
                user="This is an image <image>\n<temporal>\n, Please doing Referring Segmentation according to the "
                "following instruction:\n<refer>",
                answer=" Sure, the segmentation result is <seg>",
            ),
            "reasoning": TaskTemplate(
                user="This is a frame <image>\n<temporal>\n, Please doing Reasoning Segmentation according to the "
                "following instruction:\n<refer>",
                answer=" Sure, the segmentation result is <seg>",
            ),
            "generic": TaskTemplate(
                user="This is an image <image>\n<temporal>\n, Please segment all the positive objects according to "
                "the following potential categories. <cls>",
                answer=" It contains <entities>. The segmentation result is <seg>",
            ),
            "visual": TaskTemplate(
                user="This is an image <image>\n<temporal>\n, Please segment according to the given visual region "
                "reference <region>",
                answer=" Sure, the segmentation result is <seg>",
            ),
        },
    ),
}


def template_for(template_set: str, task: str) -> tuple[ChatTemplate, TaskTemplate]:
    if template_set not in TEMPLATE_SETS:
        raise KeyError(f"unknown template set {template_set!r}; known: {sorted(TEMPLATE_SETS)}")
    tset = TEMPLATE_SETS[template_set]
    family = TASK_FAMILY.get(task)
    if family is None:
        raise ValueError(f"unknown task {task!r}; known: {sorted(TASK_FAMILY)}")
    return tset.chat, tset.tasks[family]


# Which template (and which prompt head) each task uses.
TASK_FAMILY: dict[str, str] = {
    "referring": "referring",
    "reasoning": "reasoning",
    "generic": "generic",
    "vis": "generic",
    "visual": "visual",
}
