"""`hyperseg-stream model-info`: parameter counts of a preset, built on the meta device (nothing allocated)."""

from __future__ import annotations

import argparse
import json

from models.build import build_hyperseg
from models.presets import PRESETS

# Bytes of the authors' released HyperSeg-3B safetensors shards (weic22/HyperSeg-3B), for comparison.
RELEASED_3B_BYTES = 6_927_058_804


def model_info(preset: str) -> dict[str, object]:
    model = build_hyperseg(preset, device="meta")
    modules = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
    modules["mask_tokens"] = model.mask_tokens.numel()
    info: dict[str, object] = {
        "preset": preset,
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable": model.trainable_parameters(),
        "modules": modules,
    }
    if preset == "hyperseg-3b":
        info["released_checkpoint_bytes"] = RELEASED_3B_BYTES
        info["released_parameters_if_16bit"] = RELEASED_3B_BYTES // 2
    return info


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="hyperseg-stream model-info", description=__doc__)
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    info = model_info(args.preset)
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"preset {info['preset']}: {info['parameters']:,} parameters, {info['trainable']:,} trainable")
    for name, count in info["modules"].items():  # type: ignore[union-attr]
        print(f"  {name:16s} {count:>15,}")
    return 0
