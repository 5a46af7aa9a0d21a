"""Draw docs/training.png with OpenCV (no plotting dependency): the training loss parts over steps, and the
headline test metrics of `hyperseg-stream eval --json` against the issue's bars.

    python -m pipeline.training_plot --log docs/training_log.jsonl --eval docs/eval.json \
        --out docs/training.png
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

PARTS = ("total", "mask", "dice", "class", "refer", "refer_rank", "refer_anchor", "text", "instance", "attribute",
         "prompt_attribute", "kinematics", "motion")
COLOURS = {"total": (20, 20, 20), "mask": (200, 60, 40), "dice": (40, 120, 220), "class": (40, 170, 60),
           "refer": (180, 60, 180), "refer_rank": (60, 60, 220), "refer_anchor": (220, 60, 120),
           "text": (0, 160, 200), "instance": (120, 120, 120), "attribute": (150, 80, 255),
           "prompt_attribute": (90, 140, 90), "kinematics": (255, 160, 0), "motion": (0, 200, 120)}  # BGR
# Short names of the loss parts, on the training progress bar (pipeline/train.py) and this plot's legend.
SHORT_NAMES = {"total": "loss", "mask": "mask", "dice": "dice", "class": "cls", "refer": "ref", "refer_rank": "rank",
               "refer_anchor": "anc", "text": "txt", "instance": "ins", "attribute": "attr", "kinematics": "kin",
               "prompt_attribute": "pattr", "motion": "mot"}
# (metric key, label, bar of the issue)
METRICS = (("referring_jf", "referring J&F", 0.80), ("reasoning_jf", "reasoning J&F", 0.60),
           ("vos_jf", "VOS J&F", 0.80), ("image_giou", "image gIoU", 0.80), ("image_ciou", "image cIoU", None),
           ("panoptic_pq", "panoptic PQ", 0.50), ("semantic_miou", "semantic mIoU", None))
SMOOTH = 5  # logged records (10 steps each by default) in the moving average over the noisy losses
FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass(frozen=True)
class Panel:
    x0: int
    y0: int
    x1: int
    y1: int

    def point(self, fx: float, fy: float) -> tuple[int, int]:
        """Panel-relative fractions (0..1, y up) -> pixel."""
        return int(self.x0 + fx * (self.x1 - self.x0)), int(self.y1 - fy * (self.y1 - self.y0))


def read_log(path: Path) -> dict[str, np.ndarray]:
    """Steps and loss parts; a resumed run's repeated steps keep their last record."""
    rows: dict[int, dict] = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        rows[int(record["step"])] = record
    steps = sorted(rows)
    return {"step": np.array(steps, dtype=float),
            **{part: np.array([rows[s].get(part, np.nan) for s in steps], dtype=float) for part in PARTS}}


def _smooth(values: np.ndarray) -> np.ndarray:
    kept = np.where(np.isnan(values), np.nanmean(values) if np.isfinite(values).any() else 0.0, values)
    width = max(1, min(SMOOTH, len(kept)))
    return np.convolve(kept, np.ones(width) / width, mode="valid")


def _text(image: np.ndarray, text: str, at: tuple[int, int], scale: float = 0.45, colour=(30, 30, 30)) -> None:
    cv2.putText(image, text, at, FONT, scale, colour, 1, cv2.LINE_AA)


def draw_losses(image: np.ndarray, panel: Panel, log: dict[str, np.ndarray]) -> None:
    """Log-scale smoothed loss parts against the step."""
    steps = log["step"]
    curves = {part: _smooth(log[part]) for part in PARTS if np.isfinite(log[part]).any()}
    low = min(float(c[c > 0].min()) for c in curves.values())
    high = max(float(c.max()) for c in curves.values())
    lo, hi = np.log10(low) - 0.05, np.log10(high) + 0.05
    cv2.rectangle(image, (panel.x0, panel.y0), (panel.x1, panel.y1), (160, 160, 160), 1)
    for decade in range(int(np.floor(lo)), int(np.ceil(hi)) + 1):
        fy = (decade - lo) / (hi - lo)
        if 0 <= fy <= 1:
            y = panel.point(0, fy)[1]
            cv2.line(image, (panel.x0, y), (panel.x1, y), (225, 225, 225), 1)
            _text(image, f"1e{decade}", (panel.x0 - 42, y + 4))
    last = steps[-1] if len(steps) else 1.0
    legend_step = (panel.x1 - panel.x0 - 20) // len(curves)
    for i, (part, curve) in enumerate(curves.items()):
        xs = steps[len(steps) - len(curve):] / max(last, 1.0)
        ys = (np.log10(np.clip(curve, low, None)) - lo) / (hi - lo)
        points = np.array([panel.point(x, y) for x, y in zip(xs, ys)], dtype=np.int32)
        cv2.polylines(image, [points], False, COLOURS[part], 2 if part == "total" else 1, cv2.LINE_AA)
        _text(image, SHORT_NAMES[part], (panel.x0 + 10 + legend_step * i, panel.y1 - 10), colour=COLOURS[part])
    _text(image, "training loss parts (moving average), log scale", (panel.x0, panel.y0 - 10), 0.5)
    _text(image, f"step 0 .. {int(last)}", (panel.x0, panel.y1 + 18))


def draw_metrics(image: np.ndarray, panel: Panel, metrics: dict) -> None:
    """One bar per headline metric (0..1) with the issue's bar as a red tick."""
    cv2.rectangle(image, (panel.x0, panel.y0), (panel.x1, panel.y1), (160, 160, 160), 1)
    slot = (panel.x1 - panel.x0) / len(METRICS)
    for i, (key, label, bar) in enumerate(METRICS):
        value = metrics.get(key)
        left = int(panel.x0 + i * slot + slot * 0.2)
        right = int(panel.x0 + (i + 1) * slot - slot * 0.2)
        if value is not None:
            top = panel.point(0, value)[1]
            cv2.rectangle(image, (left, top), (right, panel.y1), (200, 140, 60), -1)
            _text(image, f"{value:.2f}", (left, top - 6))
        if bar is not None:
            y = panel.point(0, bar)[1]
            cv2.line(image, (left - 4, y), (right + 4, y), (40, 40, 220), 2)
        _text(image, label, (left - 6, panel.y1 + 16 + 14 * (i % 2)), 0.38)
    _text(image, f"test split ({metrics.get('clips')} clips); red: the issue's bar", (panel.x0, panel.y0 - 10), 0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log", required=True, help="log.jsonl of a training run")
    parser.add_argument("--eval", required=True, help="output of `hyperseg-stream eval --json` saved to a file")
    parser.add_argument("--out", default="docs/training.png")
    args = parser.parse_args(argv)
    image = np.full((420, 1200, 3), 255, dtype=np.uint8)
    draw_losses(image, Panel(70, 40, 600, 370), read_log(Path(args.log)))
    draw_metrics(image, Panel(660, 40, 1170, 370), json.loads(Path(args.eval).read_text()))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(args.out, image):
        raise OSError(f"could not write {args.out}")
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
