"""RGB frames <-> JPEG bytes, the default payload of the frames topic.

JPEG keeps a 640x360 frame around 20-40 KB, far under Kafka's 1 MB message limit,
and any consumer can decode it without knowing the source's video codec.
"""

from __future__ import annotations

import cv2
import numpy as np


class FrameDecodeError(ValueError):
    """A frames-topic payload that does not decode: not an image, an unknown codec, or a packet with no picture."""


def encode_jpeg(frame: np.ndarray, quality: int = 85) -> bytes:
    """Encode an (H, W, 3) RGB uint8 frame as JPEG at ``quality`` (1-100)."""
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    array = np.asarray(frame)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"frame must be an (H, W, 3) uint8 RGB array, got {array.dtype} {array.shape}")
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(array, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"OpenCV could not JPEG-encode a frame of shape {array.shape}")
    return buf.tobytes()


def decode_jpeg(data: bytes) -> np.ndarray:
    """Decode JPEG bytes into an (H, W, 3) RGB uint8 frame; FrameDecodeError if they are not an image."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise FrameDecodeError(f"expected image bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise FrameDecodeError("expected image bytes, got an empty payload")
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        head = bytes(data[:8]).hex()
        raise FrameDecodeError(f"payload of {len(data)} bytes is not a decodable image (starts with {head})")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
