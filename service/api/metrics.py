"""``/metrics`` (prometheus-client): what the gateway counts itself and what workers write to
Redis (frames, frame latency), read at scrape time so every gateway shows the same figures."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

from service.jobs.store import LATENCY_BUCKETS

REGISTRY = CollectorRegistry(auto_describe=True)
UPLOAD_BYTES = Counter(
    "isvos_upload_bytes", "Video bytes received by this gateway", registry=REGISTRY
)
REQUESTS = Counter(
    "isvos_http_requests", "HTTP requests by route and status", ["route", "status"],
    registry=REGISTRY,
)  # fmt: skip


class RedisSnapshot:
    """Figures read from Redis just before a scrape (``refresh``), exposed by ``collect``."""

    def __init__(self) -> None:
        self.values: dict = {}

    async def refresh(self, gw) -> None:
        r, k = gw.redis, gw.keys
        stats = {_t(a): _t(b) for a, b in (await r.hgetall(k.stats)).items()}
        latency = {_t(a): _t(b) for a, b in (await r.hgetall(k.latency)).items()}
        depth = await r.xlen(k.queue)
        try:
            pending = (await r.xpending(k.queue, "workers"))["pending"]
        except Exception:  # noqa: BLE001 - no group yet
            pending = 0
        workers = 0
        async for _ in r.scan_iter(match=k.workers_pattern, count=100):
            workers += 1
        self.values = {"stats": stats, "latency": latency, "depth": int(depth),
                       "pending": int(pending), "workers": workers}  # fmt: skip

    def collect(self):
        v = self.values
        if not v:
            return
        stats = v["stats"]
        jobs = CounterMetricFamily("isvos_jobs", "Jobs by final status", labels=["status"])
        for status in ("created", "succeeded", "failed", "cancelled"):
            jobs.add_metric([status], float(stats.get(f"jobs_{status}", 0)))
        yield jobs
        yield CounterMetricFamily(
            "isvos_frames", "Frames segmented by workers", value=float(stats.get("frames", 0))
        )
        yield GaugeMetricFamily(
            "isvos_queue_depth", "Jobs queued or running (entries in the job stream)",
            value=v["depth"],
        )  # fmt: skip
        yield GaugeMetricFamily(
            "isvos_active_sessions", "Jobs held by a worker (one session each)",
            value=v["pending"],
        )  # fmt: skip
        yield GaugeMetricFamily("isvos_workers", "Workers alive (heartbeats)", value=v["workers"])
        latency = v["latency"]
        buckets, total = [], 0.0
        for bound in LATENCY_BUCKETS:
            total += float(latency.get(repr(bound), 0))
            buckets.append((repr(bound), total))
        total += float(latency.get("+Inf", 0))
        buckets.append(("+Inf", total))
        yield HistogramMetricFamily(
            "isvos_frame_seconds", "Seconds between frames written by a worker",
            buckets=buckets, sum_value=float(latency.get("sum", 0.0)),
        )  # fmt: skip


SNAPSHOT = RedisSnapshot()
REGISTRY.register(SNAPSHOT)


def _t(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
