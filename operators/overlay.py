"""Draw masks, labels and scores over a frame, and write frames to an MP4 file (PyAV, H.264)."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np

# Distinct colours (RGB) for objects, cycled by track id or index.
PALETTE = np.array([(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
                    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)], dtype=np.uint8)
MASK_ALPHA = 0.5


def draw_overlay(frame: np.ndarray, masks: np.ndarray, captions: list[str], colour_ids: list[int]) -> np.ndarray:
    """frame (H, W, 3) uint8 RGB, masks (N, H, W) bool -> a new frame with tinted masks, outlines and captions."""
    out = frame.copy()
    for mask, caption, colour_id in zip(masks, captions, colour_ids):
        colour = PALETTE[colour_id % len(PALETTE)]
        out[mask] = ((1 - MASK_ALPHA) * out[mask] + MASK_ALPHA * colour).astype(np.uint8)
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, tuple(int(c) for c in colour), 1)
        ys, xs = np.nonzero(mask)
        if caption and len(xs):
            cv2.putText(out, caption, (int(xs.min()), max(int(ys.min()) - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                        tuple(int(c) for c in colour), 1, cv2.LINE_AA)
    return out


class Mp4Writer:
    """Frames in, an H.264 MP4 out; frame size is fixed by the first frame (even sizes, as yuv420p needs)."""

    def __init__(self, path: str | Path, fps: int) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), mode="w")
        self._stream = self._container.add_stream("libx264", rate=fps)
        self._stream.pix_fmt = "yuv420p"
        self._started = False

    def write(self, frame: np.ndarray) -> None:
        if not self._started:
            height, width = frame.shape[:2]
            self._stream.height, self._stream.width = height - height % 2, width - width % 2
            self._started = True
        frame = np.ascontiguousarray(frame[: self._stream.height, : self._stream.width])
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            self._container.mux(packet)

    def close(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()

    def __enter__(self) -> "Mp4Writer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
