"""Checkpoint I/O.

The project's format is a directory with `config.json` (the HyperSegConfig and a format version),
`model.safetensors` and, unless the model uses the built-in byte tokenizer, its tokenizer files (`tokenizer.json`).
The released HyperSeg-3B Hugging Face directory loads through a name mapping (models/released_names.py). Only
safetensors are read: pickle-based files can run code when loaded. Nothing is ever downloaded: a missing path is an
error.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, load_model, save_model

from models.build import build_hyperseg
from models.config import HyperSegConfig
from models.hyperseg import HyperSeg
from models.released_names import map_released_name

FORMAT = "hyperseg-stream"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
_UNSAFE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as asked; the message says what is wrong."""


@dataclass
class LoadReport:
    loaded: int = 0
    missing: list[str] = field(default_factory=list)  # model parameters the checkpoint did not provide
    unexpected: list[str] = field(default_factory=list)  # checkpoint tensors with no place in the model
    ignored: list[str] = field(default_factory=list)  # checkpoint tensors known to be unused
    mismatched: list[str] = field(default_factory=list)  # present on both sides with different shapes

    @property
    def complete(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, limit: int = 10) -> str:
        lines = [f"loaded {self.loaded} tensors"]
        for title, names in (("missing from the checkpoint", self.missing), ("unexpected in the checkpoint",
                             self.unexpected), ("shape mismatch", self.mismatched), ("ignored", self.ignored)):
            if names:
                more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
                lines.append(f"{len(names)} {title}: {', '.join(names[:limit])}{more}")
        return "\n".join(lines)


def _checked_dir(path: str | Path) -> Path:
    directory = Path(path)
    if not directory.exists():
        raise FileNotFoundError(f"checkpoint path {directory} does not exist (nothing is downloaded; give a local "
                                f"directory)")
    if directory.is_file():
        if directory.suffix in _UNSAFE_SUFFIXES:
            raise CheckpointError(f"{directory} is a pickle-based file; only safetensors are loaded (convert it "
                                  f"with safetensors first)")
        raise CheckpointError(f"{directory} is a file; give the checkpoint directory")
    unsafe = sorted(p.name for p in directory.iterdir() if p.suffix in _UNSAFE_SUFFIXES)
    if unsafe and not any(directory.glob("*.safetensors")):
        raise CheckpointError(f"{directory} holds only pickle-based weights ({', '.join(unsafe)}); only safetensors "
                              f"are loaded")
    return directory


def save_checkpoint(model: HyperSeg, directory: str | Path) -> Path:
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": model.cfg.to_dict()}
    (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
    save_model(model, str(out / WEIGHTS_FILE))
    if model.cfg.language.tokenizer != "byte":
        model.tokenizer.save_pretrained(str(out))
    return out


def read_config(directory: str | Path) -> HyperSegConfig:
    path = _checked_dir(directory) / CONFIG_FILE
    if not path.exists():
        raise CheckpointError(f"{path.parent} has no {CONFIG_FILE}; is it a hyperseg-stream checkpoint?")
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format {meta.get('format')!r} v{meta.get('format_version')} is not "
                              f"{FORMAT!r} v{FORMAT_VERSION}")
    return HyperSegConfig.from_dict(meta["config"])


def load_checkpoint(directory: str | Path, device: str = "cpu", strict: bool = True,
                    cfg: HyperSegConfig | None = None) -> tuple[HyperSeg, LoadReport]:
    """Build the model from the directory's config (or `cfg`, e.g. the same with a head added) and load its weights;
    `strict` raises on any gap."""
    cfg = cfg or read_config(directory)
    weights = Path(directory) / WEIGHTS_FILE
    if not weights.exists():
        raise CheckpointError(f"{weights.parent} has no {WEIGHTS_FILE}")
    own_tokenizer = cfg.language.tokenizer != "byte"
    if own_tokenizer and not (weights.parent / TOKENIZER_FILE).exists():
        raise CheckpointError(f"{weights.parent} has no {TOKENIZER_FILE}, and its config uses a "
                              f"{cfg.language.tokenizer} tokenizer")
    model = build_hyperseg(cfg, device=device,
                           tokenizer_dir=directory if own_tokenizer else None)
    missing, unexpected = load_model(model, str(weights), strict=False, device=device)
    report = LoadReport(loaded=len(model.state_dict()) - len(missing), missing=sorted(missing),
                        unexpected=sorted(unexpected))
    if strict and not report.complete:
        raise CheckpointError(f"{weights} does not match the model built from its config:\n{report.summary()}")
    return model.eval(), report


def _canonical(name: str) -> str:
    """Our state-dict name without peft's wrapper parts (what the release's LoRA-merged names correspond to)."""
    return re.sub(r"\.base_layer(?=\.)", "", name.replace("base_model.model.", ""))


def load_released(model: HyperSeg, directory: str | Path) -> LoadReport:
    """Load the authors' released HyperSeg-3B directory (safetensors shards) into `model` by name mapping.

    Fills what maps, leaves the rest as built, and returns the report (LoRA adapters stay at their initial
    values: the release has them merged into the base weights)."""
    shards = sorted(_checked_dir(directory).glob("*.safetensors"))
    if not shards:
        raise CheckpointError(f"{directory} has no .safetensors files")
    params = model.state_dict()
    by_canonical = {_canonical(name): name for name in params if ".lora_" not in name}
    report = LoadReport()
    filled: set[str] = set()
    for shard in shards:
        for name, tensor in load_file(str(shard)).items():
            targets = map_released_name(name)
            if targets == ():
                report.ignored.append(name)
                continue
            if targets is None or any(t not in by_canonical for t in targets):
                report.unexpected.append(name)
                continue
            pieces = tensor.chunk(len(targets)) if len(targets) > 1 else (tensor,)
            for target, piece in zip(targets, pieces):
                ours = params[by_canonical[target]]
                if ours.shape != piece.shape:
                    report.mismatched.append(f"{name} {tuple(piece.shape)} -> {target} {tuple(ours.shape)}")
                    continue
                with torch.no_grad():
                    ours.copy_(piece.to(ours.dtype))
                filled.add(by_canonical[target])
                report.loaded += 1
    report.missing = sorted(canon for canon, full in by_canonical.items() if full not in filled)
    return report


# The model the project trains on its synthetic world and ships in the repo (see its MODEL_CARD.md).
SHIPPED_DIR = Path(__file__).parent / "weights" / "synthetic-tiny"


def load_default_model(checkpoint: str | Path | None = None, device: str | torch.device = "cpu") -> tuple[HyperSeg, str]:
    """(model in eval mode, model id): the given checkpoint directory, else the shipped synthetic-world model."""
    directory = Path(checkpoint) if checkpoint else SHIPPED_DIR
    model, _ = load_checkpoint(directory, device=str(device))
    return model, directory.name
