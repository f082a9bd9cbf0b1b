"""``isvos stream``: a camera client. Frames of a video file, a V4L2 device or an RTSP/HTTP
URL (all through PyAV) go to a ``Track`` server; results are written like ``isvos segment``
writes them, with a live status line (frames/s, latency p50/p99, dropped frames)."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from isvos.errors import IsvosError
from service.media.base import Frame
from service.rpc.client import SendFrame, TrackClient, result_labels
from service.rpc.gen import segmentation_pb2 as pb
from service.sinks import DirectorySink


@dataclass
class StreamReport:
    frames: int
    dropped: int
    seconds: float
    latency_ms: list[float]
    reconnects: int

    def status(self) -> str:
        lat = sorted(self.latency_ms) or [0.0]
        p50 = statistics.median(lat)
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        fps = self.frames / max(self.seconds, 1e-9)
        return (f"{self.frames} frames, {fps:.1f} f/s, latency p50 {p50:.0f} ms p99 {p99:.0f} ms, "
                f"dropped {self.dropped}, reconnects {self.reconnects}")  # fmt: skip


def open_source(source: str) -> tuple[object, object]:
    """A PyAV container and its video stream: a file, ``/dev/videoN`` or a URL."""
    options = {}
    fmt = None
    if source.startswith("/dev/video"):
        fmt = "v4l2"
    elif source.startswith(("rtsp://", "rtsps://")):
        options = {"rtsp_transport": "tcp"}
    try:
        container = av.open(source, format=fmt, options=options)
    except (OSError, av.FFmpegError) as exc:
        raise IsvosError("video_unreadable", f"cannot open {source!r}: {exc}") from exc
    if not container.streams.video:
        container.close()
        raise IsvosError("video_unreadable", f"{source!r} has no video stream")
    return container, container.streams.video[0]


def source_frames(source: str, realtime: bool, stop: threading.Event) -> Iterator[tuple]:
    """(index, RGB image, capture time in µs) of ``source``; a file is paced at its own rate
    with ``realtime``, else read as fast as possible."""
    container, stream = open_source(source)
    started = None
    try:
        for index, frame in enumerate(container.decode(stream)):
            if stop.is_set():
                return
            if realtime and frame.time is not None:
                started = started or (time.monotonic() - frame.time)
                wait = started + frame.time - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            yield index, frame.to_ndarray(format="rgb24"), time.time_ns() // 1000
    finally:
        container.close()


async def stream(
    client: TrackClient,
    source: str,
    prompts: Callable[[tuple[int, int]], dict[int, np.ndarray]],
    out: Path | None,
    *,
    realtime: bool = False,
    overlay: bool = False,
    encoding: str = "rgb",
    status: Callable[[StreamReport], None] | None = None,
) -> StreamReport:
    """Stream ``source``; ``prompts(size)`` gives the masks by frame index (label maps)."""
    loop = asyncio.get_running_loop()
    stop = threading.Event()
    queue: asyncio.Queue = asyncio.Queue(8)
    images: dict[int, np.ndarray] = {}  # for the overlay: frames until their result
    sent_at: dict[int, float] = {}
    state = {"prompts": None, "size": None}

    failure: list[BaseException] = []

    def produce() -> None:
        try:
            for item in source_frames(source, realtime, stop):
                asyncio.run_coroutine_threadsafe(queue.put(item), loop).result()
        except BaseException as exc:  # handed to the stream
            failure.append(exc)
        finally:
            asyncio.run_coroutine_threadsafe(queue.put(None), loop).result()

    container, _ = await asyncio.to_thread(open_source, source)  # a clear error up front
    container.close()

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()

    async def frames():
        while (item := await queue.get()) is not None or failure:
            if item is None:
                error = failure[0]
                if isinstance(error, IsvosError):
                    raise error
                raise IsvosError("video_unreadable", f"reading {source!r} failed: {error}")
            index, image, captured = item
            if state["prompts"] is None:
                state["size"] = image.shape[:2]
                state["prompts"] = prompts(image.shape[:2])
            if overlay:
                images[index] = image
            sent_at[index] = time.perf_counter()
            yield SendFrame(index, image, state["prompts"].get(index), captured,
                            encoding=encoding)  # fmt: skip

    report = StreamReport(0, 0, 0.0, [], 0)
    sink = None
    latencies: deque[float] = deque(maxlen=10_000)
    started = time.perf_counter()
    try:
        async for result in client.track(frames()):
            now = time.perf_counter()
            latencies.append((now - sent_at.pop(result.index, now)) * 1e3)
            report.dropped += len(result.dropped_indices)
            for index in result.dropped_indices:
                sent_at.pop(index, None)
                images.pop(index, None)
            labels = result_labels(result)
            if out is not None:
                if sink is None:
                    ids = sorted({int(i) for m in state["prompts"].values() for i in np.unique(m)
                                  if i})  # fmt: skip
                    sink = DirectorySink(out, labels.shape, ids, rle=True,
                                         overlay_fps=25.0 if overlay else None)  # fmt: skip
                image = images.pop(result.index, None)
                if image is None:
                    image = np.zeros((*labels.shape, 3), np.uint8)
                await asyncio.to_thread(sink.write, Frame(result.index, None, image), labels)
            report.frames += 1
            report.seconds = time.perf_counter() - started
            report.latency_ms = list(latencies)
            report.reconnects = client.reconnects
            if status is not None:
                status(report)
        if sink is not None:
            await asyncio.to_thread(sink.finish)
    finally:
        stop.set()
        if sink is not None:
            sink.close()
    return report


def open_options(short_side: int, policy: str, mask_format: str = "rle") -> pb.Open:
    policies = {"every_frame": pb.BACKPRESSURE_POLICY_EVERY_FRAME,
                "latest": pb.BACKPRESSURE_POLICY_LATEST}  # fmt: skip
    formats = {"rle": pb.MASK_FORMAT_RLE, "png": pb.MASK_FORMAT_INDEXED_PNG}
    return pb.Open(short_side=short_side, policy=policies[policy], mask_format=formats[mask_format])
