"""The streaming pipeline end to end on real parts: tansu broker, local Ray with the Serve app (fused), the router,
ingest from files and from rtsp-server-perl, the control topic, exactly-once across a router crash, and an
independent client (confluent-kafka) reading the masks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaProducer

from operators.frame_codec import encode_jpeg
from operators.local_stages import decode_payload
from operators.metrics import JFAccumulator
from operators.prompt_spec import PromptSpec
from operators.rle import decode_rle
from operators.synthetic import WorldConfig, make_clip
from pipeline.broker import EmbeddedBroker, producer_config
from pipeline.control import ControlOp, send_control
from pipeline.demo_clips import DemoClip, write_demo_clip
from pipeline.ingest import IngestSettings, run_ingest
from pipeline.records import decode_record, frame_headers, validate_record
from pipeline.router import EMBEDDED_GROUP_OVERRIDES, RouterSettings, RouterThread
from pipeline.sources import SourceSpec
from pipeline.subscribe import decode_objects, file_frames, iter_mask_records
from pipeline.topic_reader import TopicReader
from pipeline.topics import TopicLayout, ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
FRAMES = 8
#: The shipped model's own figure (the JSON of ``hyperseg-stream eval --json``, next to the weights or in docs/)
#: and how far a single streamed test clip may fall below it.
EVAL_FILES = (REPO / "models" / "weights" / "synthetic-tiny" / "eval.json", REPO / "docs" / "eval.json")
EVAL_MARGIN = 0.15
#: How far the streamed masks may fall below the same model run in-process on the same pixels (the clip's MP4
#: decoded and JPEG-coded as ingest codes it). Compression itself is not the pipeline's fault: one flipped pick in
#: the 8 frames moves J&F by ~0.12, and whether a codec flips one is a property of the weights.
PARITY_MARGIN = 0.05


@dataclass
class Pipeline:
    bootstrap: str
    layout: TopicLayout
    router: RouterThread


@pytest.fixture(scope="module")
def pipeline(kafka_broker: EmbeddedBroker) -> Iterator[Pipeline]:
    """Ray + the fused Serve app + one router thread on the e2e topics, for the whole module."""
    pytest.importorskip("ray")
    from pipeline.stream_backends import make_backend

    layout = TopicLayout.prefixed("e2e")
    ensure_topics(kafka_broker.bootstrap, layout)
    with make_backend(local=False, deploy="fused") as backend:
        settings = RouterSettings(kafka_broker.bootstrap, layout, group_id="e2e-router", max_in_flight=4,
                                  consumer_overrides=dict(EMBEDDED_GROUP_OVERRIDES))
        router = RouterThread(settings, backend)
        router.start()
        try:
            assert router.router.ready.wait(60), "the router got no partition"
            yield Pipeline(kafka_broker.bootstrap, layout, router)
        finally:
            router.stop.set()
            router.join(60)
    assert router.error is None, router.error


def add_stream(p: Pipeline, stream_id: str, prompt: PromptSpec, **fields: object) -> None:
    send_control(p.bootstrap, [ControlOp("add-stream", stream_id, time.time(), prompt=prompt, **fields)],
                 p.layout.control)


def read_masks(p: Pipeline, stream_id: str, count: int, timeout_s: float = 120) -> list[dict]:
    """All of the stream's mask records once ``count`` arrived (or the timeout passed), read again from the
    start after a short quiet spell so that a duplicate or an extra record would show."""
    seen = 0
    for _ in iter_mask_records(p.bootstrap, p.layout.masks, stream_id, idle_timeout_s=timeout_s):
        seen += 1
        if seen >= count:
            break
    return list(iter_mask_records(p.bootstrap, p.layout.masks, stream_id, idle_timeout_s=1.5))


def send_frames(bootstrap: str, topic: str, stream_id: str, frames: np.ndarray, first_seq: int) -> None:
    producer = KafkaProducer(**producer_config(bootstrap))
    for offset, frame in enumerate(frames):
        producer.send(topic, key=stream_id.encode(), value=encode_jpeg(frame),
                      headers=frame_headers(first_seq + offset, time.time(), "jpeg"))
    producer.flush()
    producer.close()


def streamed_jf(records: list[dict], clip: DemoClip) -> float:
    scores = JFAccumulator()
    for record in records:
        masks = [obj.mask for obj in decode_objects(record)]
        predicted = np.logical_or.reduce(masks) if masks else np.zeros(clip.ground_truth.shape[1:], bool)
        scores.add_frame("clip", "referring", predicted, clip.ground_truth[record["frame_seq"]])
    return scores.scores()["all"].jf


def ingested_frames(clip: DemoClip) -> list[np.ndarray]:
    """The clip's frames as the stream actors get them: its MP4 decoded, then the ingest's JPEG round trip."""
    quality = IngestSettings().jpeg_quality
    return [decode_payload(encode_jpeg(frame, quality), "jpeg") for _, frame in file_frames(str(clip.path))]


def offline_jf(clip: DemoClip) -> float:
    """The same model in this process, frame by frame on the pixels the pipeline ingests."""
    import torch

    from models.checkpoint import load_default_model
    from models.video_predictor import HyperSegVideoPredictor

    torch.set_num_threads(1)
    model, _ = load_default_model()
    predictor = HyperSegVideoPredictor(model)
    frames = ingested_frames(clip)
    assert len(frames) == FRAMES
    prompt = clip.prompt.to_task_prompt(frames[0].shape[:2], model.cfg.visual_prompt)
    scores, state = JFAccumulator(), None
    for index, frame in enumerate(frames):
        result, state = predictor.step(frame, prompt, state)
        predicted = result.masks.numpy().any(axis=0) if len(result.masks) else np.zeros(frame.shape[:2], bool)
        scores.add_frame("clip", "referring", predicted, clip.ground_truth[index])
    return scores.scores()["all"].jf


@pytest.fixture(scope="module")
def two_streams(pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[DemoClip, list]]:
    """Two synthetic test clips (a referring expression, a class list) ingested from MP4 files at once."""
    directory = tmp_path_factory.mktemp("clips")
    clips = {"e2e-referring": write_demo_clip(0, "referring", directory, FRAMES),
             "e2e-classes": write_demo_clip(1, "classes", directory, FRAMES)}
    for stream_id, clip in clips.items():
        add_stream(pipeline, stream_id, clip.prompt, source=str(clip.path))
    reports = run_ingest([SourceSpec(s, str(c.path)) for s, c in clips.items()], pipeline.bootstrap,
                         pipeline.layout.frames, IngestSettings(status_topic=pipeline.layout.status))
    assert {s: (r.state, r.frames) for s, r in reports.items()} == {s: ("ended", FRAMES) for s in clips}
    return {s: (clip, read_masks(pipeline, s, FRAMES, timeout_s=150)) for s, clip in clips.items()}


def test_n_frames_in_n_ordered_decodable_masks_out(two_streams: dict) -> None:
    for stream_id, (clip, records) in two_streams.items():
        assert [r["frame_seq"] for r in records] == list(range(FRAMES)), stream_id  # exactly N, in order, no dup
        for record in records:
            validate_record(record)
            assert (record["stream_id"], record["width"], record["height"]) == (stream_id, 256, 256)
            assert record["task"] == clip.prompt.task and record["prompt_id"] == clip.prompt.prompt_id
            for obj in record["objects"]:
                mask = decode_rle(obj["rle"])  # pycocotools
                assert mask.shape == (256, 256) and obj["rle"]["size"] == [256, 256]
                x, y, w, h = obj["bbox"]
                assert mask.any() == (w > 0) and not mask[:, : int(x)].any() and not mask[: int(y)].any()
            assert record["publish_ts"] >= record["capture_ts"]


def test_streamed_masks_match_the_model(two_streams: dict) -> None:
    """Mean J&F of the referring stream against the synthetic ground truth: no worse than the same model run
    in-process on the same pixels, and (once trained weights ship their eval.json) than the model's own eval."""
    clip, records = two_streams["e2e-referring"]
    streamed = streamed_jf(records, clip)
    offline = offline_jf(clip)
    assert streamed >= offline - PARITY_MARGIN, (streamed, offline)
    evals = [json.loads(path.read_text()) for path in EVAL_FILES if path.is_file()]
    evals = [e for e in evals if e.get("model", "synthetic-tiny") == "synthetic-tiny" and "referring_jf" in e]
    if evals:
        figure = evals[0]["referring_jf"]
        assert streamed >= figure - EVAL_MARGIN, (streamed, figure)


def test_prompt_change_takes_effect_on_the_next_frame(pipeline: Pipeline) -> None:
    stream_id = "e2e-control"
    frames = make_clip(2, "test", WorldConfig(num_frames=10)).frames
    referring = PromptSpec(task="referring", text="the small dotted orange square")
    classes = PromptSpec(task="generic", classes=("square", "pentagon"), generic_mode="instance")
    later = PromptSpec(task="referring", text="the yellow object moving right")
    add_stream(pipeline, stream_id, referring)
    send_frames(pipeline.bootstrap, pipeline.layout.frames, stream_id, frames[:3], 0)
    assert len(read_masks(pipeline, stream_id, 3)) == 3
    send_control(pipeline.bootstrap, [ControlOp("set-prompt", stream_id, time.time(), prompt=classes)],
                 pipeline.layout.control)
    send_frames(pipeline.bootstrap, pipeline.layout.frames, stream_id, frames[3:6], 3)
    # A change with from_seq, sent before frames 6-9: frames 6 and 7 keep the class list.
    send_control(pipeline.bootstrap, [ControlOp("set-prompt", stream_id, time.time(), prompt=later, from_seq=8)],
                 pipeline.layout.control)
    send_frames(pipeline.bootstrap, pipeline.layout.frames, stream_id, frames[6:10], 6)
    records = read_masks(pipeline, stream_id, 10)
    assert [r["frame_seq"] for r in records] == list(range(10))
    expected = [referring] * 3 + [classes] * 5 + [later] * 2
    assert [(r["task"], r["prompt_id"]) for r in records] == [(p.task, p.prompt_id) for p in expected]


def test_rtsp_source_is_ingested_and_masked(pipeline: Pipeline, rtsp_url: str) -> None:
    stream_id = "e2e-rtsp"
    add_stream(pipeline, stream_id, PromptSpec(task="generic", classes=("person", "bike"), generic_mode="instance"))
    reports = run_ingest([SourceSpec(stream_id, rtsp_url, rtsp_transport="udp")], pipeline.bootstrap,
                         pipeline.layout.frames, IngestSettings(max_frames=5, status_topic=pipeline.layout.status))
    assert (reports[stream_id].state, reports[stream_id].frames) == ("stopped", 5)
    records = read_masks(pipeline, stream_id, 5)
    seqs = [r["frame_seq"] for r in records]
    assert len(records) == 5 and seqs == sorted(set(seqs))  # live: drop-oldest may leave gaps, never reorders
    assert {(r["width"], r["height"], r["task"]) for r in records} == {(640, 272, "generic")}


def test_confluent_kafka_reads_the_masks(pipeline: Pipeline, two_streams: dict) -> None:
    confluent_kafka = pytest.importorskip("confluent_kafka")
    consumer = confluent_kafka.Consumer({"bootstrap.servers": pipeline.bootstrap, "group.id": "e2e-independent",
                                         "auto.offset.reset": "earliest", "isolation.level": "read_committed",
                                         "enable.auto.commit": False})
    consumer.assign([confluent_kafka.TopicPartition(pipeline.layout.masks, 0, confluent_kafka.OFFSET_BEGINNING)])
    seen: dict[str, list[int]] = {}
    try:
        deadline = time.monotonic() + 30
        while sum(map(len, seen.values())) < 2 * FRAMES and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            record = validate_record(json.loads(message.value()))
            headers = dict(message.headers())
            assert message.key().decode() == record["stream_id"]
            assert int(headers["seq"]) == record["frame_seq"]
            if record["stream_id"] in two_streams:
                seen.setdefault(record["stream_id"], []).append(record["frame_seq"])
    finally:
        consumer.close()
    assert seen == {s: list(range(FRAMES)) for s in two_streams}


def _router_process(bootstrap: str, instance: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "pipeline.cli", "run", "--bootstrap", bootstrap, "--topic-prefix", "eos",
               "--no-ray", "--delivery", "exactly-once", "--instance-id", instance, "--max-in-flight", "2",
               "--fast-group-join", "--idle-exit", "6", "--metrics-port", "0", "--log-level", "WARNING"]
    env = os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _written_mask_seqs(bootstrap: str, topic: str) -> list[int]:
    """Frame seqs of every mask record in ``topic``, open transactions included (read_uncommitted, to the
    high-water mark; tansu reports 0 as a read_committed end offset while a transaction is open)."""
    reader = TopicReader(bootstrap, topic, isolation_level="read_uncommitted")
    try:
        return [decode_record(record.value)["frame_seq"] for record in reader.read_to_end()]
    finally:
        reader.close()


def test_exactly_once_survives_a_router_crash(kafka_broker: EmbeddedBroker) -> None:
    """Kill -9 the router mid-stream, start it again: the committed masks and the committed offsets agree, so
    read_committed sees every mask once, the replay starting right after the last committed one.

    The kill usually lands while frames are processed (no transaction open). When it lands inside an open
    transaction, Apache Kafka hides its records for good, while tansu turns them visible once the restarted
    router fences the dead one (docs/kafka.md, "Caveat"): then exactly those records appear once more, in between.
    """
    bootstrap, layout, total = kafka_broker.bootstrap, TopicLayout.prefixed("eos"), 16
    ensure_topics(bootstrap, layout)
    send_control(bootstrap, [ControlOp("add-stream", "eos-cam", time.time(),
                                       prompt=PromptSpec(task="referring", text="the red square"))], layout.control)
    send_frames(bootstrap, layout.frames, "eos-cam", make_clip(0, "test", WorldConfig(num_frames=total)).frames, 0)
    first = _router_process(bootstrap, "r1")
    try:
        seen_before_crash = 0
        for _ in iter_mask_records(bootstrap, layout.masks, idle_timeout_s=90):
            seen_before_crash += 1
            if seen_before_crash >= 4:
                break
        time.sleep(0.05)  # the router is now processing the next batch (its transaction is not open yet)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    committed = [r["frame_seq"] for r in iter_mask_records(bootstrap, layout.masks, idle_timeout_s=3)]
    written = _written_mask_seqs(bootstrap, layout.masks)
    assert 4 <= seen_before_crash <= len(committed) < total
    assert committed == list(range(len(committed))) and written[: len(committed)] == committed
    left_open = written[len(committed):]  # sent inside the transaction the kill cut short (usually none)
    second = _router_process(bootstrap, "r1")  # same transactional id: fences the dead one, ends its transaction
    _, stderr = second.communicate(timeout=180)
    assert second.returncode == 0, stderr.decode()[-2000:]
    records = list(iter_mask_records(bootstrap, layout.masks, idle_timeout_s=3))
    replay = list(range(len(committed), total))
    assert [r["frame_seq"] for r in records] in (committed + replay, committed + left_open + replay)
