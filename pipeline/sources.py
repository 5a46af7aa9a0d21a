"""Video sources read with PyAV: what a source is, how it opens, and one connection's items.

A connection yields decoded RGB frames (the default) or, in pass-through mode, the
compressed H.264/HEVC packets in Annex B form with parameter sets on key frames, so
a downstream decoder can start at any key frame. Reconnecting is not done here
(see ``pipeline/reconnect.py``); this module raises and lets the caller decide.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlparse

import av
import numpy as np
from av.bitstream import BitStreamFilterContext

SourceKind = Literal["file", "rtsp", "http", "device"]
PASSTHROUGH_CODECS = ("h264", "hevc")


class SourceConfigError(ValueError):
    """A source that can never work as configured (retrying would not help)."""


class StallError(RuntimeError):
    """The source is connected but produced no frame within the stall timeout."""


@dataclass(frozen=True)
class SourceSpec:
    """One camera, stream or file; ``stream_id`` is the Kafka key of everything it produces.

    ``live`` decides the drop policy (live: drop oldest; not live: lossless) and defaults to
    False for files and True for RTSP, HTTP/HLS and V4L2 devices. ``loop`` replays a file.
    ``options`` are extra FFmpeg demuxer options. ``realtime`` replays a file at its own frame rate,
    as a camera would deliver it (decoded frames only).
    """

    stream_id: str
    url: str
    loop: bool = False
    rtsp_transport: str = "tcp"
    live: bool | None = None
    target_fps: float | None = None
    options: Mapping[str, str] = field(default_factory=dict)
    realtime: bool = False

    def __post_init__(self) -> None:
        if not self.stream_id or not self.url:
            raise SourceConfigError(f"a source needs a stream id and a url, got {self.stream_id!r}={self.url!r}")
        if self.target_fps is not None and self.target_fps <= 0:
            raise SourceConfigError(f"target_fps must be positive, got {self.target_fps}")
        if self.rtsp_transport not in ("tcp", "udp", "udp_multicast", "http", "https"):
            raise SourceConfigError(f"unknown rtsp_transport {self.rtsp_transport!r}")

    @property
    def kind(self) -> SourceKind:
        """What the url points at, from its scheme or path."""
        scheme = urlparse(self.url).scheme.lower()
        if scheme in ("rtsp", "rtsps"):
            return "rtsp"
        if scheme in ("http", "https", "hls"):
            return "http"
        if self.url.startswith("/dev/video") or scheme == "v4l2":
            return "device"
        return "file"

    @property
    def is_live(self) -> bool:
        """Whether frames arrive in real time (so old ones may be dropped rather than block the camera)."""
        return self.kind != "file" if self.live is None else self.live


def parse_source(text: str, **defaults: object) -> SourceSpec:
    """Parse the CLI form ``STREAM_ID=URL`` into a SourceSpec with the given defaults."""
    stream_id, sep, url = text.partition("=")
    if not sep or not stream_id.strip() or not url.strip():
        raise SourceConfigError(f"source must look like STREAM_ID=URL, got {text!r}")
    return SourceSpec(stream_id=stream_id.strip(), url=url.strip(), **defaults)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Frame:
    """A decoded RGB frame and when it was captured (unix seconds)."""

    rgb: np.ndarray
    capture_ts: float


@dataclass(frozen=True)
class Packet:
    """A compressed Annex B packet for pass-through mode."""

    data: bytes
    codec: str
    keyframe: bool
    capture_ts: float


def open_source(spec: SourceSpec, open_timeout_s: float, read_timeout_s: float) -> av.container.InputContainer:
    """Open the source with PyAV; a read that waits longer than ``read_timeout_s`` raises (stall)."""
    options = dict(spec.options)
    fmt = None
    url = spec.url
    if spec.kind == "rtsp":
        options.setdefault("rtsp_transport", spec.rtsp_transport)
    elif spec.kind == "device":
        fmt = "v4l2"
        url = url.removeprefix("v4l2://")
    started = time.monotonic()
    try:
        return av.open(url, format=fmt, options=options, timeout=(open_timeout_s, read_timeout_s))
    except av.FFmpegError as exc:
        # PyAV's timeout interrupts FFmpeg, whose demuxers then report assorted errors; name the real cause.
        if time.monotonic() - started >= open_timeout_s:
            raise TimeoutError(f"{spec.stream_id}: {url} did not open within {open_timeout_s:.1f}s") from exc
        raise


class _FrameSkipper:
    """Keeps frames at most ``target_fps`` apart in media time (wall clock when a frame has no timestamp)."""

    def __init__(self, target_fps: float | None) -> None:
        self._period = 0.0 if target_fps is None else 1.0 / target_fps
        self._next_due: float | None = None

    def keep(self, media_time: float | None) -> bool:
        if self._period == 0.0:
            return True
        t = time.monotonic() if media_time is None else media_time
        due = self._next_due
        if due is not None and t < due - 1e-6 and t > due - 2 * self._period:
            return False
        # On cadence: step one period; first frame, fell behind, or time jumped back: restart from t.
        on_cadence = due is not None and due - 1e-6 <= t < due + self._period
        self._next_due = (due + self._period) if on_cadence else t + self._period
        return True


class _Pacer:
    """Holds frames back until their media time has passed on the wall clock (``realtime`` replay)."""

    def __init__(self) -> None:
        self._origin: tuple[float, float] | None = None  # (media time, monotonic time) of the first frame

    def wait(self, media_time: float | None) -> None:
        if media_time is None:
            return
        if self._origin is None or media_time < self._origin[0]:  # first frame, or a loop restarted the file
            self._origin = (media_time, time.monotonic())
        delay = (media_time - self._origin[0]) - (time.monotonic() - self._origin[1])
        if delay > 0:
            time.sleep(delay)


def _annexb_filter(stream: av.video.stream.VideoStream) -> BitStreamFilterContext:
    """Filter that makes every key frame self-contained Annex B, whatever the container stored."""
    codec = stream.codec_context.name
    extradata = stream.codec_context.extradata or b""
    if extradata[:1] == b"\x01":  # avcC / hvcC (MP4-style): convert, which also inserts SPS/PPS.
        return BitStreamFilterContext(f"{codec}_mp4toannexb", stream)
    return BitStreamFilterContext("dump_extra=freq=keyframe", stream)


def read_connection(
    container: av.container.InputContainer, spec: SourceSpec, passthrough: bool, stall_timeout_s: float
) -> Iterator[Frame | Packet]:
    """Yield items from one open connection until end of stream; StallError if frames stop but data flows."""
    if not container.streams.video:
        raise SourceConfigError(f"{spec.url} has no video stream")
    stream = container.streams.video[0]
    codec = stream.codec_context.name
    if passthrough and codec not in PASSTHROUGH_CODECS:
        raise SourceConfigError(f"pass-through supports {PASSTHROUGH_CODECS}, {spec.stream_id} is {codec}")
    bsf = _annexb_filter(stream) if passthrough else None
    skipper = _FrameSkipper(None if passthrough else spec.target_fps)
    try:
        pacer = _Pacer() if spec.realtime else None
        yield from _items(container.demux(stream), codec, bsf, skipper, stall_timeout_s, pacer)
    except av.error.ExitError as exc:  # the read timeout fired: no data at all
        raise StallError(f"{spec.stream_id}: no data for {stall_timeout_s:.1f}s") from exc


def _items(
    packets: Iterator[av.Packet],
    codec: str,
    bsf: BitStreamFilterContext | None,
    skipper: _FrameSkipper,
    stall_timeout_s: float,
    pacer: _Pacer | None = None,
) -> Iterator[Frame | Packet]:
    """Packets to items; StallError when data flows but no frame comes out for ``stall_timeout_s``."""
    last_progress = time.monotonic()
    for packet in packets:
        if bsf is not None:
            items: list[Frame | Packet] = [
                Packet(bytes(p), codec, bool(p.is_keyframe), time.time()) for p in bsf.filter(packet)
            ]
            progressed = bool(items)
        else:
            frames = packet.decode()
            progressed = bool(frames)
            items = []
            for f in frames:
                if skipper.keep(f.time):
                    if pacer is not None:
                        pacer.wait(f.time)
                    items.append(Frame(f.to_ndarray(format="rgb24"), time.time()))
        if progressed:
            last_progress = time.monotonic()
        elif time.monotonic() - last_progress > stall_timeout_s:
            raise StallError(f"no frame for {stall_timeout_s:.1f}s although data arrives")
        yield from items
