"""The pipeline's Prometheus metrics, one definition table, two ways out.

- In a plain process (the Kafka router, `--no-ray` runs) they are prometheus_client metrics served on
  `start_metrics_server(port)` at http://HOST:PORT/metrics.
- Inside Ray (per-stream actors, Serve replicas: many processes on many nodes) they are `ray.util.metrics`, which
  each node's Ray metrics agent aggregates and serves on the node's metrics export port (`ray start
  --metrics-export-port`); Ray prefixes the names with `ray_`. Ray writes a service-discovery file for Prometheus
  (monitoring/prometheus.yml uses it), next to Serve's own `ray_serve_*` metrics.

Names (Ray adds the `ray_` prefix):
  hyperseg_stage_latency_seconds{stage}         histogram: decode, encode, vllm, predictor, fused, rle, frame
  hyperseg_frames_processed_total{stream}       counter: frames that produced a mask record
  hyperseg_frames_dropped_total{stream}         counter: sequence gaps seen by the stream (dropped upstream)
  hyperseg_frame_errors_total{stream,kind}      counter: frames that failed (decode, prompt, sequence, ...)
  hyperseg_queue_depth{stage}                   gauge: router_in_flight (submitted, not yet published), frames_lag
  hyperseg_active_streams                       gauge: per-stream actors alive in this router
  hyperseg_evictions_total                      counter: idle streams checkpointed and evicted
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

# Stage latencies run from ~1 ms (decode) to seconds (the VLLM of a large model on CPU).
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class MetricDef:
    name: str
    kind: str  # histogram | counter | gauge
    description: str
    labels: tuple[str, ...] = ()


METRICS = {
    m.name: m
    for m in (
        MetricDef("hyperseg_stage_latency_seconds", "histogram", "Seconds per frame spent in a stage", ("stage",)),
        MetricDef("hyperseg_frames_processed_total", "counter", "Frames that produced a mask record", ("stream",)),
        MetricDef("hyperseg_frames_dropped_total", "counter", "Frames missing from a stream's sequence", ("stream",)),
        MetricDef("hyperseg_frame_errors_total", "counter", "Frames that failed", ("stream", "kind")),
        MetricDef("hyperseg_queue_depth", "gauge", "Frames waiting at a stage of the router", ("stage",)),
        MetricDef("hyperseg_active_streams", "gauge", "Per-stream actors alive in this router"),
        MetricDef("hyperseg_evictions_total", "counter", "Idle streams checkpointed and evicted"),
    )
}


def _in_ray_worker() -> bool:
    try:
        import ray
    except ImportError:
        return False
    return ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE


@cache
def _prometheus_metric(name: str) -> Any:
    import prometheus_client

    d = METRICS[name]
    if d.kind == "histogram":
        return prometheus_client.Histogram(d.name, d.description, d.labels, buckets=LATENCY_BUCKETS_S)
    if d.kind == "counter":  # prometheus_client appends _total itself
        return prometheus_client.Counter(d.name.removesuffix("_total"), d.description, d.labels)
    return prometheus_client.Gauge(d.name, d.description, d.labels)


@cache
def _ray_metric(name: str) -> Any:
    from ray.util import metrics

    d = METRICS[name]
    if d.kind == "histogram":
        return metrics.Histogram(d.name, d.description, boundaries=list(LATENCY_BUCKETS_S), tag_keys=d.labels)
    if d.kind == "counter":
        return metrics.Counter(d.name, d.description, tag_keys=d.labels)
    return metrics.Gauge(d.name, d.description, tag_keys=d.labels)


def _record(name: str, value: float, **labels: str) -> None:
    kind = METRICS[name].kind
    if _in_ray_worker():
        metric = _ray_metric(name)
        tags = {k: str(v) for k, v in labels.items()} or None
        if kind == "histogram":
            metric.observe(value, tags=tags)
        elif kind == "counter":
            metric.inc(value, tags=tags)
        else:
            metric.set(value, tags=tags)
        return
    metric = _prometheus_metric(name)
    child = metric.labels(**labels) if labels else metric
    if kind == "histogram":
        child.observe(value)
    elif kind == "counter":
        child.inc(value)
    else:
        child.set(value)


def observe_stage(stage: str, seconds: float) -> None:
    _record("hyperseg_stage_latency_seconds", seconds, stage=stage)


def frame_processed(stream_id: str, gap: int) -> None:
    _record("hyperseg_frames_processed_total", 1, stream=stream_id)
    if gap:
        _record("hyperseg_frames_dropped_total", gap, stream=stream_id)


def frame_failed(stream_id: str, kind: str) -> None:
    _record("hyperseg_frame_errors_total", 1, stream=stream_id, kind=kind)


def set_queue_depth(stage: str, depth: int) -> None:
    _record("hyperseg_queue_depth", depth, stage=stage)


def set_active_streams(count: int) -> None:
    _record("hyperseg_active_streams", count)


def stream_evicted() -> None:
    _record("hyperseg_evictions_total", 1)


def start_metrics_server(port: int, addr: str = "0.0.0.0") -> None:
    """Serve this process's prometheus_client metrics at http://addr:port/metrics."""
    import prometheus_client

    prometheus_client.start_http_server(port, addr)
