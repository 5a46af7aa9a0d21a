"""LoRA adapters of the LLM as named, swappable parts: one stream can run a different adapter than another.

The model is built with peft's adapter "default" (the one its checkpoint trains). More adapters load from a
directory that peft's `save_pretrained` wrote (adapter_config.json + adapter_model.safetensors, never pickle) and
are switched per batch with `use_adapter`.
"""

from __future__ import annotations

from pathlib import Path

from peft import PeftModel

from models.config import DEFAULT_ADAPTER
from models.hyperseg import HyperSeg


class AdapterError(ValueError):
    """An adapter that is unknown, missing on disk, or does not fit the model."""


def _peft(model: HyperSeg) -> PeftModel:
    peft_model = model.language.model
    if not isinstance(peft_model, PeftModel):
        raise AdapterError("this model's LLM has no LoRA (its config sets lora: null); only 'default' exists")
    return peft_model


def adapter_names(model: HyperSeg) -> list[str]:
    peft_model = model.language.model
    return list(peft_model.peft_config) if isinstance(peft_model, PeftModel) else [DEFAULT_ADAPTER]


def save_adapter(model: HyperSeg, directory: str | Path, name: str = DEFAULT_ADAPTER) -> Path:
    """Write adapter `name` as a loadable directory (safetensors)."""
    out = Path(directory)
    peft_model = _peft(model)
    if name not in peft_model.peft_config:
        raise AdapterError(f"no adapter {name!r}; the model has {adapter_names(model)}")
    peft_model.save_pretrained(str(out), selected_adapters=[name], safe_serialization=True)
    return out if name == DEFAULT_ADAPTER else out / name


def load_adapter(model: HyperSeg, name: str, directory: str | Path) -> None:
    """Add adapter `name` from `directory` (as `save_adapter` wrote it); the active adapter does not change."""
    path = Path(directory)
    if not (path / "adapter_config.json").is_file():
        raise AdapterError(f"{path} is not a LoRA adapter directory (no adapter_config.json)")
    try:
        _peft(model).load_adapter(str(path), adapter_name=name, torch_device=str(model.device))
    except (ValueError, RuntimeError, KeyError) as exc:
        raise AdapterError(f"adapter {name!r} from {path} does not fit the model: {exc}") from exc


def unload_adapter(model: HyperSeg, name: str) -> None:
    if name == DEFAULT_ADAPTER:
        raise AdapterError("the default adapter belongs to the checkpoint and is never unloaded")
    peft_model = _peft(model)
    if name not in peft_model.peft_config:
        return
    if peft_model.active_adapter == name:
        peft_model.set_adapter(DEFAULT_ADAPTER)
    peft_model.delete_adapter(name)


def ensure_adapter(model: HyperSeg, name: str, adapters_dir: str | Path | None) -> None:
    """Load adapter `name` from `adapters_dir/name` unless it is loaded already."""
    if name in adapter_names(model):
        return
    if adapters_dir is None:
        raise AdapterError(f"adapter {name!r} is not loaded and no adapters directory is configured")
    load_adapter(model, name, Path(adapters_dir) / name)


def use_adapter(model: HyperSeg, name: str) -> None:
    """Make `name` the adapter the next forward passes run with."""
    if name not in adapter_names(model):
        raise AdapterError(f"adapter {name!r} is not loaded; loaded: {adapter_names(model)}")
    if isinstance(model.language.model, PeftModel):
        model.language.model.set_adapter(name)
