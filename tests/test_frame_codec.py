"""JPEG frame payloads: faithful at default quality, sized by quality, loud on bad bytes."""

import numpy as np
import pytest

from operators.frame_codec import FrameDecodeError, decode_jpeg, encode_jpeg


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    """A smooth RGB frame with distinct channels, so a colour-order swap would show."""
    y, x = np.mgrid[0:120, 0:160]
    return np.stack([x * 255 // 159, y * 255 // 119, np.full_like(x, 40)], axis=-1).astype(np.uint8)


def test_round_trip_keeps_shape_and_colours(frame: np.ndarray) -> None:
    decoded = decode_jpeg(encode_jpeg(frame))
    assert decoded.shape == frame.shape and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - frame.astype(int)).mean() < 2.0


def test_quality_trades_size(frame: np.ndarray) -> None:
    noisy = np.clip(frame + np.random.default_rng(0).integers(0, 30, frame.shape), 0, 255).astype(np.uint8)
    assert len(encode_jpeg(noisy, quality=30)) < len(encode_jpeg(noisy, quality=95))


@pytest.mark.parametrize("quality", [0, 101])
def test_quality_out_of_range(frame: np.ndarray, quality: int) -> None:
    with pytest.raises(ValueError, match="quality"):
        encode_jpeg(frame, quality)


@pytest.mark.parametrize(
    "bad", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 4), np.uint8)]
)
def test_wrong_frames_are_rejected(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        encode_jpeg(bad)


def test_bad_bytes_give_a_clear_error(frame: np.ndarray) -> None:
    good = encode_jpeg(frame)
    for bad in (b"", b"not a jpeg", good[: len(good) // 2]):
        with pytest.raises(FrameDecodeError, match=r"not a decodable image|empty payload"):
            decode_jpeg(bad)
    with pytest.raises(FrameDecodeError, match="expected image bytes"):
        decode_jpeg("text")  # type: ignore[arg-type]
