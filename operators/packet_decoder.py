"""Per-stream decoding of pass-through packets (H.264 / HEVC Annex B) into RGB frames.

Inter-coded packets only decode against the stream's earlier pictures, so this decoder is per-stream state and
lives with the stream (its actor), not in a shared stateless deployment. It cannot be checkpointed: after a
restart it waits for the next key frame, which ingest flags in the record headers.
"""

from __future__ import annotations

import av
import numpy as np

from operators.frame_codec import FrameDecodeError

PACKET_CODECS = {"h264": "h264", "hevc": "hevc"}


class PacketDecoder:
    def __init__(self, codec: str) -> None:
        if codec not in PACKET_CODECS:
            raise FrameDecodeError(f"no packet decoder for codec {codec!r}; expected one of {sorted(PACKET_CODECS)}")
        self.codec = codec
        self._context = av.CodecContext.create(PACKET_CODECS[codec], "r")
        self._context.flags |= av.codec.context.Flags.low_delay  # one picture out per packet where the stream allows
        self._synced = False

    def decode(self, payload: bytes, keyframe: bool | None) -> np.ndarray:
        """Annex B packet -> (H, W, 3) uint8 RGB of the picture it completes (FrameDecodeError if none)."""
        if not self._synced and not keyframe:
            raise FrameDecodeError(f"{self.codec} decoder is waiting for a key frame (the stream started or "
                                   f"restarted on an inter-coded packet)")
        try:
            frames = self._context.decode(av.Packet(payload))
        except (av.error.FFmpegError, ValueError) as exc:
            raise FrameDecodeError(f"{self.codec} packet of {len(payload)} bytes does not decode: {exc}") from exc
        if not frames:
            raise FrameDecodeError(f"{self.codec} decoder buffered the packet without a picture (B-frames reorder: "
                                   f"use a low-delay stream or the JPEG payload)")
        self._synced = True
        return frames[-1].to_ndarray(format="rgb24")
