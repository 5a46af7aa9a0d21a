"""One stream's frames in order -> segmentation results, with no Ray or Kafka: the logic of a per-stream actor.

    stages = LocalStages.from_checkpoint()                 # or pipeline.serve.serve_stages.ServeStages(...)
    processor = StreamProcessor("cam-1", stages, stages.model_id,
                                PromptSpec(task="referring", text="the red square"), key_frame_interval=1)
    out = processor.process(FrameInput(seq=0, capture_ts=time.time(), codec="jpeg", payload=jpeg_bytes))
    out.masks, out.scores, out.labels, out.track_ids      # (N, H, W) bool at frame size, per-object lists
    processor.set_prompt(PromptSpec(task="generic", classes=("circle", "square")))   # from the next frame on
    blob = processor.checkpoint()                          # compact bytes: no pickle
    processor = StreamProcessor.restore(blob, stages)      # resumes with identical masks

Contract:
- Frames are processed strictly in sequence order: a `seq` at or below the last one raises `SequenceError` (a
  redelivered frame: skip it), a jump forward is allowed and counted in `gaps` (frames dropped upstream).
- A frame that fails (garbled payload, prompt that does not fit the frame) raises and leaves the state as it was.
- `set_prompt` takes effect from the next frame (a visual prompt from its `frame_seq` on) and drops the temporal
  state that belonged to the old prompt (prompt ring, fine-grained latents, tracker).
- `key_frame_interval` k: the VLLM runs on every k-th frame since the prompt started; frames between reuse its
  E_Q / E_P and run only the encoder and predictor.
- A stream with no prompt yet raises `NoPromptError` for its frames.

`Stages` is where the model runs: `LocalStages` (operators/local_stages.py) in this process, or the Ray Serve
deployments (pipeline/serve/serve_stages.py, split or fused): the processor is the same.
Building the Kafka mask record from a `ProcessedFrame` is the pipeline's job (pipeline/stream_actor.py).
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from models.config import HyperSegConfig
from models.postprocess import FrameResult
from models.prompts import TaskPrompt
from models.temporal import StreamState
from models.video_predictor import FrameRequest
from operators.frame_codec import FrameDecodeError
from operators.packet_decoder import PACKET_CODECS, PacketDecoder
from operators.prompt_spec import PromptError, PromptSpec

CHECKPOINT_MAGIC = b"HSSP"
CHECKPOINT_VERSION = 1
FRAME_CODECS = ("jpeg", *PACKET_CODECS)


class SequenceError(ValueError):
    """A frame whose seq is not after the last processed one (stale or redelivered)."""

    def __init__(self, stream_id: str, seq: int, last_seq: int) -> None:
        super().__init__(f"stream {stream_id!r}: frame seq {seq} is not after the last processed seq {last_seq}")
        self.seq, self.last_seq = seq, last_seq


class NoPromptError(RuntimeError):
    """A frame arrived for a stream that has no prompt yet."""


class CheckpointFormatError(ValueError):
    """Bytes that are not a stream-processor checkpoint."""


@dataclass(frozen=True)
class FrameInput:
    """One frames-topic record: sequence, capture time, payload codec ("jpeg", "h264", "hevc") and bytes."""

    seq: int
    capture_ts: float
    codec: str
    payload: bytes
    keyframe: bool | None = None  # pass-through packets: ingest flags key frames

    def __post_init__(self) -> None:
        if not isinstance(self.seq, int) or self.seq < 0:
            raise ValueError(f"frame seq must be a non-negative integer, got {self.seq!r}")
        if self.codec not in FRAME_CODECS:
            raise FrameDecodeError(f"frame codec {self.codec!r} is not one of {FRAME_CODECS}")


class Stages(Protocol):
    """Where the model runs for a processor: in-process, or on Serve deployments."""

    config: HyperSegConfig
    model_id: str

    def decode(self, payload: bytes, codec: str) -> np.ndarray:
        """Still-image payload (JPEG) -> (H, W, 3) uint8 RGB, or any frame stand-in with that `.shape` which this
        Stages' `run` accepts (the Serve stages leave the pixels in the Decode replica)."""

    def run(self, request: FrameRequest, adapter: str) -> tuple[FrameResult, StreamState]:
        """One frame of one stream through encode / VLLM (when `request.run_vllm`) / predictor."""


@dataclass
class ProcessedFrame:
    """One frame's result at the frame's resolution, and what the mask record needs to describe it."""

    stream_id: str
    seq: int
    capture_ts: float
    task: str
    prompt_id: str
    model_id: str
    width: int
    height: int
    masks: np.ndarray  # (N, H, W) bool
    scores: list[float]
    labels: list[str | None]
    track_ids: list[int | None]
    key_frame: bool  # the VLLM ran on this frame
    gap: int  # frames missing between the previous processed frame and this one
    latency_s: float = 0.0  # decode + model, as seen by the processor
    entities: tuple[str, ...] = field(default_factory=tuple)


class StreamProcessor:
    def __init__(self, stream_id: str, stages: Stages, model_id: str, prompt: PromptSpec | None = None,
                 key_frame_interval: int = 1) -> None:
        if not stream_id:
            raise ValueError("stream_id must be a non-empty string")
        if key_frame_interval < 1:
            raise ValueError(f"key_frame_interval must be >= 1, got {key_frame_interval}")
        self.stream_id = stream_id
        self.stages = stages
        self.model_id = model_id
        self.key_frame_interval = key_frame_interval
        self.prompt: PromptSpec | None = None
        self.pending_prompt: PromptSpec | None = prompt
        self.state: StreamState | None = None
        self.last_seq: int | None = None
        self.frames = 0
        self.gaps = 0
        self._packet_decoder: PacketDecoder | None = None
        self._rasterised: tuple[tuple[PromptSpec, tuple[int, int]], TaskPrompt] | None = None

    # ---- control ------------------------------------------------------------------------------------------
    def set_prompt(self, spec: PromptSpec | dict) -> PromptSpec:
        """Queue a prompt for the next frame (a visual prompt: the first frame at or after its frame_seq)."""
        spec = spec if isinstance(spec, PromptSpec) else PromptSpec.from_dict(spec)
        self.pending_prompt = spec
        return spec

    # ---- frames -------------------------------------------------------------------------------------------
    def process(self, frame: FrameInput) -> ProcessedFrame:
        started = time.perf_counter()
        if self.last_seq is not None and frame.seq <= self.last_seq:
            raise SequenceError(self.stream_id, frame.seq, self.last_seq)
        image = self._decode(frame)
        prompt, state = self._prompt_for(frame.seq)
        height, width = int(image.shape[0]), int(image.shape[1])
        try:
            task_prompt = self._task_prompt(prompt, (height, width))
        except PromptError as exc:
            if prompt is self.pending_prompt:  # a new prompt that cannot apply is dropped; the old one stays
                self.pending_prompt = None
            raise PromptError(f"stream {self.stream_id!r}: prompt {prompt.prompt_id} dropped: {exc}") from exc
        key_frame = state is None or state.queries is None or state.frame_index % self.key_frame_interval == 0
        result, new_state = self.stages.run(FrameRequest(image, task_prompt, state, key_frame), prompt.adapter)

        gap = 0 if self.last_seq is None else frame.seq - self.last_seq - 1
        self.prompt, self.state = prompt, new_state
        if prompt is self.pending_prompt:
            self.pending_prompt = None
        self.last_seq = frame.seq
        self.frames += 1
        self.gaps += gap
        return ProcessedFrame(
            stream_id=self.stream_id, seq=frame.seq, capture_ts=frame.capture_ts, task=prompt.task,
            prompt_id=prompt.prompt_id, model_id=self.model_id, width=width, height=height,
            masks=result.masks.cpu().numpy().astype(bool), scores=[float(s) for s in result.scores.tolist()],
            labels=list(result.labels), track_ids=list(result.track_ids), key_frame=key_frame, gap=gap,
            latency_s=time.perf_counter() - started, entities=tuple(result.entities),
        )

    def _prompt_for(self, seq: int) -> tuple[PromptSpec, StreamState | None]:
        """The prompt in force for frame `seq` and the state to continue (None: start afresh)."""
        pending = self.pending_prompt
        if pending is not None and (pending.frame_seq is None or seq >= pending.frame_seq or self.prompt is None):
            return pending, None
        if self.prompt is None:
            raise NoPromptError(f"stream {self.stream_id!r} has no prompt yet; set one before sending frames")
        return self.prompt, self.state

    def _task_prompt(self, prompt: PromptSpec, size: tuple[int, int]) -> TaskPrompt:
        """The prompt's TaskPrompt for frames of `size`, rasterised once per (prompt, size) rather than per frame:
        drawing a visual prompt's regions at frame size (a scribble especially) costs more than a small model step."""
        if self._rasterised is None or self._rasterised[0] != (prompt, size):
            self._rasterised = ((prompt, size), prompt.to_task_prompt(size, self.stages.config.visual_prompt))
        return self._rasterised[1]

    def _decode(self, frame: FrameInput) -> np.ndarray:
        if frame.codec == "jpeg":
            return self.stages.decode(frame.payload, frame.codec)
        if self._packet_decoder is None or self._packet_decoder.codec != frame.codec:
            self._packet_decoder = PacketDecoder(frame.codec)
        return self._packet_decoder.decode(frame.payload, frame.keyframe)

    # ---- checkpoint ---------------------------------------------------------------------------------------
    def checkpoint(self) -> bytes:
        """MAGIC | u32 header length | JSON header (prompt, seq, counters) | StreamState safetensors bytes."""
        header = {
            "version": CHECKPOINT_VERSION, "stream_id": self.stream_id, "model_id": self.model_id,
            "key_frame_interval": self.key_frame_interval, "last_seq": self.last_seq, "frames": self.frames,
            "gaps": self.gaps, "prompt": self.prompt.to_dict() if self.prompt else None,
            "pending_prompt": self.pending_prompt.to_dict() if self.pending_prompt else None,
        }
        head = json.dumps(header, separators=(",", ":")).encode()
        state = self.state.to_bytes() if self.state is not None else b""
        return CHECKPOINT_MAGIC + struct.pack("<I", len(head)) + head + state

    @classmethod
    def restore(cls, data: bytes, stages: Stages) -> "StreamProcessor":
        header, state = read_checkpoint(data)
        processor = cls(header["stream_id"], stages, header["model_id"],
                        key_frame_interval=header["key_frame_interval"])
        try:
            processor.prompt = PromptSpec.from_dict(header["prompt"]) if header["prompt"] else None
            pending = header["pending_prompt"]
            processor.pending_prompt = PromptSpec.from_dict(pending) if pending else None
        except PromptError as exc:
            raise CheckpointFormatError(f"checkpoint holds an invalid prompt: {exc}") from exc
        processor.state = StreamState.from_bytes(state) if state else None
        processor.last_seq, processor.frames, processor.gaps = header["last_seq"], header["frames"], header["gaps"]
        return processor


def read_checkpoint(data: bytes) -> tuple[dict, bytes]:
    """(header, StreamState bytes) of a checkpoint; CheckpointFormatError says what is wrong."""
    if not isinstance(data, (bytes, bytearray)) or data[:4] != CHECKPOINT_MAGIC or len(data) < 8:
        raise CheckpointFormatError("not a stream-processor checkpoint (bad magic)")
    (length,) = struct.unpack("<I", data[4:8])
    try:
        header = json.loads(bytes(data[8 : 8 + length]))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointFormatError(f"checkpoint header is not JSON: {exc}") from exc
    if header.get("version") != CHECKPOINT_VERSION:
        raise CheckpointFormatError(f"checkpoint version {header.get('version')} is not {CHECKPOINT_VERSION}")
    return header, bytes(data[8 + length :])
