"""Training HyperSeg on generic samples: one optimiser step over a batch of images or short clips.

A sample is `L` consecutive frames with one task prompt and per-frame targets (L = 1 is an image). Frames of a
clip run causally as in streaming: the LLM outputs at the fine-grained-token slots of frame t-1 start the
perceiver on frame t (local injection) and the prompt embeddings are pooled over the last frames (global
aggregation), with gradients through both, so the temporal adapter learns. Consecutive frames of a clip also
give the instance association loss. Nothing here knows where samples come from.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from models.checkpoint import load_checkpoint, save_checkpoint
from models.hyperseg import HyperSeg, VLLMRequest
from models.losses import FrameTarget, HyperSegLoss, Matching, instance_association_loss, text_loss
from models.predictor import PredictorOutput
from models.prompts import TaskPrompt
from models.pyramid_encoder import PixelFeatures
from models.temporal import TemporalAdapter

TRAINING_STATE_FILE = "training_state.pt"
TRAIN_CONFIG_FILE = "train_config.json"


@dataclass
class TrainingSample:
    """`L` frames of one stream under one prompt, with what the model should output on each frame."""

    frames: torch.Tensor  # (L, H, W, 3) uint8 RGB
    prompt: TaskPrompt
    targets: list[FrameTarget]  # one per frame
    object_ids: list[torch.Tensor]  # per frame (K_t,): which object each target mask is, for association
    entities: list[tuple[str, ...]] | None = None  # per frame, generic tasks: the listed classes present
    region_frame: torch.Tensor | None = None  # (H, W, 3) frame the visual-prompt regions were drawn on

    def __post_init__(self) -> None:
        length = int(self.frames.shape[0])
        if len(self.targets) != length or len(self.object_ids) != length:
            raise ValueError(f"a sample of {length} frames needs {length} targets and object-id lists, got "
                             f"{len(self.targets)} and {len(self.object_ids)}")
        if self.prompt.task == "visual" and self.region_frame is None:
            raise ValueError("a visual-prompt sample needs the frame its regions were drawn on (region_frame)")

    def __len__(self) -> int:
        return int(self.frames.shape[0])


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then cosine decay to `min_lr_ratio` x lr at `steps`."""

    steps: int = 2000
    lr: float = 5e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    seed: int = 0


@dataclass
class WarmupCosine:
    """The learning-rate factor of a step (a callable object, so LambdaLR's state_dict keeps it)."""

    warmup_steps: int
    total_steps: int
    min_ratio: float

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min((step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1), 1.0)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class StepResult:
    losses: dict[str, float] = field(default_factory=dict)  # each loss part and "total"
    lr: float = 0.0
    grad_norm: float = 0.0
    samples: int = 0
    frames: int = 0


def _slice_pixels(pixel: PixelFeatures, rows: slice) -> PixelFeatures:
    return PixelFeatures(mask_features=pixel.mask_features[rows],
                         multi_scale=tuple(scale[rows] for scale in pixel.multi_scale))


def _association(batch: list[TrainingSample], t: int, current: PredictorOutput, previous: PredictorOutput,
                 matches: Matching, previous_matches: Matching, temperature: float) -> torch.Tensor | None:
    """Mean InfoNCE between frames t-1 and t over the samples with a task that has instances."""
    terms = []
    for b, sample in enumerate(batch):
        if sample.prompt.task in ("referring", "reasoning"):
            continue
        key = (matches[b][0], sample.object_ids[t][matches[b][1]])
        reference = (previous_matches[b][0], sample.object_ids[t - 1][previous_matches[b][1]])
        terms.append(instance_association_loss(current.instance[b], previous.instance[b], key, reference,
                                               temperature))
    return torch.stack(terms).mean() if terms else None


def batch_losses(model: HyperSeg, criterion: HyperSegLoss, batch: list[TrainingSample]) -> dict[str, torch.Tensor]:
    """Loss parts of a batch of equal-length samples (mask, dice, class, refer, text, instance), each already
    weighted and averaged over frames."""
    length = len(batch[0])
    if any(len(sample) != length for sample in batch):
        raise ValueError("all samples of a batch must have the same number of frames")
    cfg, size = model.cfg, len(batch)
    # Time-major: frame t of every sample sits in rows t*B .. t*B + B - 1.
    encoded = model.encode([sample.frames[t] for t in range(length) for sample in batch])
    pixels = model.decode_pixels(encoded.pyramid)
    regions: list[torch.Tensor | None] = [None] * size
    visual = [b for b, sample in enumerate(batch) if sample.prompt.task == "visual"]
    if visual:
        region_tokens = model.image_tokens([batch[b].region_frame for b in visual])
        for i, b in enumerate(visual):
            regions[b] = model.region_features(region_tokens[i], batch[b].prompt.regions)

    tasks = [sample.prompt.task for sample in batch]
    totals: dict[str, torch.Tensor] = {}
    latents: list[torch.Tensor | None] = [None] * size
    history: list[list[torch.Tensor]] = [[] for _ in batch]
    previous: tuple[PredictorOutput, Matching] | None = None
    for t in range(length):
        rows = slice(t * size, (t + 1) * size)
        requests = [VLLMRequest(sample.prompt, latents[b], regions[b],
                                sample.entities[t] if sample.entities is not None else None)
                    for b, sample in enumerate(batch)]
        out = model.vllm_step(encoded.image_tokens[rows], {k: v[rows] for k, v in encoded.pyramid.items()},
                              requests, with_logits=True)
        if cfg.temporal.inject_latents:
            latents = list(out.next_latents)
        prompts = out.prompts
        if cfg.temporal.aggregate_prompts:
            for b in range(size):
                history[b] = (history[b] + [out.prompts[b]])[-cfg.temporal.window:]
            prompts = torch.stack([TemporalAdapter.aggregate(torch.stack(h)) for h in history])
        prediction = model.predict(_slice_pixels(pixels, rows), out.queries, prompts, out.prompt_valid)
        parts, matches = criterion(prediction, [sample.targets[t] for sample in batch], tasks)
        parts["text"] = text_loss(out.text_logits, out.text_labels) * cfg.loss.text_weight
        if previous is not None:
            association = _association(batch, t, prediction, previous[0], matches, previous[1],
                                       cfg.loss.instance_temperature)
            if association is not None:
                parts["instance"] = association * cfg.loss.instance_weight
        for name, value in parts.items():
            totals[name] = totals.get(name, 0.0) + value / length
        previous = (prediction, matches)
    return totals


class Trainer:
    """Owns the optimiser, the schedule and the step counter of one run; saves and resumes all of it."""

    def __init__(self, model: HyperSeg, cfg: OptimConfig) -> None:
        self.model = model.train()
        self.cfg = cfg
        self.criterion = HyperSegLoss(model.cfg.loss, model.cfg.predictor)
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no trainable parameters (check HyperSegConfig.frozen and LoRA)")
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, WarmupCosine(cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio))
        self.step_index = 0

    def train_step(self, batch: list[TrainingSample]) -> StepResult:
        self.model.train()
        parts = batch_losses(self.model, self.criterion, batch)
        total = sum(parts.values())
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        grad_norm = nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.step_index += 1
        losses = {name: float(value.detach()) for name, value in parts.items()}
        losses["total"] = float(total.detach())
        return StepResult(losses=losses, lr=lr, grad_norm=float(grad_norm), samples=len(batch),
                          frames=sum(len(sample) for sample in batch))

    def save(self, directory: str | Path, extra: dict | None = None) -> Path:
        """A loadable model checkpoint plus everything resuming needs (optimiser, schedule, step, torch RNG)."""
        out = save_checkpoint(self.model, directory)
        state = {"step": self.step_index, "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "torch_rng": torch.get_rng_state()}
        torch.save(state, out / TRAINING_STATE_FILE)
        (out / TRAIN_CONFIG_FILE).write_text(json.dumps({"optim": asdict(self.cfg), **(extra or {})}, indent=2))
        return out

    @classmethod
    def resume(cls, directory: str | Path, cfg: OptimConfig, device: str = "cpu") -> "Trainer":
        """Rebuild the model from the checkpoint and restore the optimiser, schedule, step and RNG."""
        model, _ = load_checkpoint(directory, device=device)
        trainer = cls(model, cfg)
        state = torch.load(Path(directory) / TRAINING_STATE_FILE, map_location=device, weights_only=True)
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.scheduler.load_state_dict(state["scheduler"])
        # The schedule follows `cfg` (load_state_dict restored the saved one): a resumed run may be given more or
        # fewer total steps than it started with.
        trainer.scheduler.lr_lambdas = [WarmupCosine(cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)]
        trainer.step_index = int(state["step"])
        torch.set_rng_state(state["torch_rng"].cpu())
        return trainer


def pick_device(requested: str = "auto") -> str:
    """`auto`: the GPU when there is one, else the CPU."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested
