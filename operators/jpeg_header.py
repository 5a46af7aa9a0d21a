"""The size of a JPEG from its header alone, so a process can plan for a frame it never decodes itself."""

from __future__ import annotations

from operators.frame_codec import FrameDecodeError

# Start-of-frame markers (baseline, progressive, lossless, arithmetic): they carry the image size.
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(height, width) from the JPEG's start-of-frame segment; FrameDecodeError if there is none."""
    if data[:2] != b"\xff\xd8":
        raise FrameDecodeError(f"payload of {len(data)} bytes is not a JPEG (starts with {bytes(data[:8]).hex()})")
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise FrameDecodeError(f"JPEG header is corrupt at byte {i}")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker in _SOF_MARKERS and i + 9 <= len(data):
            height, width = int.from_bytes(data[i + 5 : i + 7], "big"), int.from_bytes(data[i + 7 : i + 9], "big")
            if height and width:
                return height, width
        i += 2 + length
    raise FrameDecodeError(f"JPEG of {len(data)} bytes has no start-of-frame segment before its data")
