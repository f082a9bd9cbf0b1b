"""Video probing and decoding (PyAV) with limit checks, rotation and frame folders.

Rotation convention: ``VideoInfo.rotation`` is the angle in degrees (0/90/180/270)
by which the stored picture is rotated COUNTER-CLOCKWISE for display. It comes
from the stream's display matrix (PyAV 18 exposes it only per decoded frame, as
``VideoFrame.rotation`` in [-180, 180]); an old-style ``rotate`` tag, which is
clockwise, is used as a fallback. Decoded images are rotated with
``np.rot90(image, k=rotation // 90)``, matching OpenCV's and ffmpeg's autorotation.
Sample aspect ratio and display-matrix flips are ignored.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
from av.error import FFmpegError

from .base import (
    Frame,
    VideoInfo,
    apply_rotation,
    check_count,
    check_dims,
    check_duration,
    check_range,
    normalize_rotation,
    past_end,
)
from .errors import MediaError
from .framefolder import IMAGE_EXTENSIONS, iter_folder, list_frame_files, probe_folder
from .limits import DEFAULT_LIMITS, MediaLimits

__all__ = [
    "IMAGE_EXTENSIONS",
    "BackgroundDecoder",
    "Frame",
    "VideoInfo",
    "apply_rotation",
    "count_frames",
    "iter_frames",
    "list_frame_files",
    "normalize_rotation",
    "probe_video",
]


def _unreadable(path: Path, detail: str) -> MediaError:
    return MediaError(
        "video_unreadable",
        f"cannot read video {path.name!r}: {detail}. The file may be truncated, corrupt or "
        "not a video; re-export it (e.g. as H.264 MP4) and upload it again.",
    )


# ---------------------------------------------------------------- containers


@dataclass
class _Opened:
    container: Any  # av.container.InputContainer
    stream: Any  # av.video.stream.VideoStream
    tag_rotation: int


def _open_checked(path: Path, limits: MediaLimits, threads: int = 0) -> _Opened:
    """Open a video file and check every limit the headers allow, without decoding.

    ``threads``: FFmpeg decoding threads, 0 for FFmpeg's choice (frame and slice threads,
    one per core), 1 to decode on the calling thread only.
    """
    if not path.exists():
        raise MediaError("video_unreadable", f"video {str(path)!r} does not exist.")
    size = path.stat().st_size
    if size > limits.max_file_bytes:
        raise MediaError(
            "video_too_large",
            f"video {path.name!r} is {size / 2**20:.0f} MiB, over the limit of "
            f"{limits.max_file_bytes / 2**20:.0f} MiB; compress or shorten it.",
        )
    if size == 0:
        raise _unreadable(path, "the file is empty")
    try:
        # Metadata that is not valid UTF-8 (a corrupt or hostile file) is replaced, not fatal.
        container = av.open(str(path), mode="r", metadata_errors="replace")
    except FFmpegError as e:
        raise _unreadable(path, f"FFmpeg cannot open it ({e.strerror or e})") from e
    try:
        if container.format.name.endswith("_pipe") or container.format.name == "image2":
            raise MediaError(
                "unknown_format",
                f"{path.name!r} is a still image ({container.format.name}), not a video; "
                "give a video file, or a folder of numbered frames.",
            )
        streams = [
            s
            for s in container.streams.video
            if not s.disposition & av.stream.Disposition.attached_pic
        ]
        if not streams:
            raise _unreadable(path, "it has no video stream")
        vs = streams[0]
        cc = vs.codec_context
        if cc is None:  # a corrupt stream header: FFmpeg knows no decoder for it
            raise _unreadable(path, "the video stream names no codec FFmpeg can decode")
        if not cc.width or not cc.height:
            raise _unreadable(path, "the video stream declares no frame size")
        check_dims(cc.width, cc.height, limits, f"video {path.name!r}")
        if vs.frames:
            check_count(vs.frames, limits, f"video {path.name!r}")
        duration = _duration_s(container, vs)
        if duration is not None:
            check_duration(duration, limits, f"video {path.name!r}")
            fps = _fps(vs)
            if not vs.frames and fps and duration * fps > limits.max_frames * 1.05:
                check_count(int(duration * fps), limits, f"video {path.name!r} (estimated)")
        tag = vs.metadata.get("rotate")
        try:
            tag_rotation = normalize_rotation(-float(tag)) if tag else 0
        except ValueError:
            tag_rotation = 0
        if threads == 1:
            vs.codec_context.thread_count = 1
        else:
            vs.thread_type = "AUTO"
            vs.codec_context.thread_count = threads
        return _Opened(container, vs, tag_rotation)
    except BaseException:
        container.close()
        raise


def _fps(vs: Any) -> float | None:
    rate = vs.average_rate or vs.guessed_rate
    return float(rate) if rate else None


def _duration_s(container: Any, vs: Any) -> float | None:
    if vs.duration is not None and vs.time_base is not None and vs.duration > 0:
        return float(vs.duration * vs.time_base)
    if container.duration:
        return container.duration / av.time_base
    return None


def _frame_rotation(frame: Any, tag_rotation: int) -> int:
    rot = normalize_rotation(frame.rotation)
    return rot if rot else tag_rotation


# ---------------------------------------------------------------- probe


def probe_video(path: str | Path, limits: MediaLimits = DEFAULT_LIMITS) -> VideoInfo:
    """Read a video's (or frame folder's) properties; raises MediaError on any limit.

    Limits are checked from the headers before decoding; then the first frame is
    decoded to confirm the file is readable and to learn the display rotation.
    """
    p = Path(path)
    if p.is_dir():
        return probe_folder(p, limits)
    opened = _open_checked(p, limits, threads=1)  # one frame: threads would only add latency
    container, vs = opened.container, opened.stream
    try:
        try:
            first = next(container.decode(vs), None)
        except FFmpegError as e:
            raise _unreadable(p, f"the first frame cannot be decoded ({e.strerror or e})") from e
        if first is None:
            raise _unreadable(p, "it contains no decodable frames")
        rotation = _frame_rotation(first, opened.tag_rotation)
        cw, ch = first.width, first.height  # decoded size (headers may differ by cropping)
        check_dims(cw, ch, limits, f"video {p.name!r}")
        w, h = (ch, cw) if rotation in (90, 270) else (cw, ch)
        return VideoInfo(
            path=p,
            width=w,
            height=h,
            coded_width=cw,
            coded_height=ch,
            rotation=rotation,
            frame_count=vs.frames or None,
            fps=_fps(vs),
            duration_s=_duration_s(container, vs),
            codec=vs.codec_context.name,
            pixel_format=first.format.name,
            has_audio=len(container.streams.audio) > 0,
            is_frame_folder=False,
        )
    finally:
        container.close()


# ---------------------------------------------------------------- decoding


def iter_frames(
    path: str | Path,
    limits: MediaLimits = DEFAULT_LIMITS,
    start: int = 0,
    end: int | None = None,
    stride: int = 1,
    threads: int = 0,
) -> Iterator[Frame]:
    """Yield frames ``start, start+stride, ... < end`` as RGB in displayed orientation.

    Frames are the first frame's size: a mid-stream resolution change is rescaled.

    ``end`` past the last frame is clipped; ``start`` past it raises ``frame_range``.
    Only the video stream is decoded. Range arguments are checked immediately; the
    file is opened on the first ``next()``. ``threads``: FFmpeg decoding threads (0: one
    per core; 1 when the model shares the CPU, so decoding does not preempt it).
    """
    check_range(start, end, stride)
    p = Path(path)
    if p.is_dir():
        return iter_folder(p, limits, start, end, stride)
    return _iter_video(p, limits, start, end, stride, threads)


def _iter_video(
    path: Path, limits: MediaLimits, start: int, end: int | None, stride: int, threads: int
) -> Iterator[Frame]:
    opened = _open_checked(path, limits, threads)
    container, vs = opened.container, opened.stream
    declared = vs.frames or None
    n = 0
    last_pts: float | None = None
    rotation: int | None = None
    size: tuple[int, int] | None = None  # (w, h) of the first frame; later ones are scaled
    try:
        if declared is not None and start >= declared:
            raise past_end(start, declared)
        try:
            for frame in container.decode(vs):
                if end is not None and n >= end:
                    break
                check_count(n + 1, limits, f"video {path.name!r}")
                pts_s = float(frame.time) if frame.time is not None else None
                last_pts = pts_s if pts_s is not None else last_pts
                if pts_s is not None:
                    check_duration(pts_s, limits, f"video {path.name!r}")
                if rotation is None or size is None:
                    rotation = _frame_rotation(frame, opened.tag_rotation)
                    size = (frame.width, frame.height)
                    check_dims(*size, limits, f"video {path.name!r}")
                if n >= start and (n - start) % stride == 0:
                    rgb = frame.to_ndarray(format="rgb24", width=size[0], height=size[1])
                    image = apply_rotation(rgb, rotation)
                    yield Frame(index=n, pts_s=pts_s, image=image)
                n += 1
            else:
                problem = _truncation(container, vs, declared, n, last_pts)
                if problem:
                    raise _unreadable(path, problem)
                if n <= start:
                    raise past_end(start, n)
        except FFmpegError as e:
            raise _unreadable(path, f"decoding failed after frame {n} ({e.strerror or e})") from e
    finally:
        container.close()


def _truncation(
    container: Any, vs: Any, declared: int | None, n: int, last_pts: float | None
) -> str | None:
    """Why a fully decoded file looks cut short, or None. Uses the header's frame count
    (MP4/MOV) or, for single-stream Matroska/WebM, the header duration."""
    if declared is not None:
        if n < 0.9 * declared - 1:
            return f"the header declares {declared} frames but only {n} decode"
        return None
    fmt = container.format.name or ""
    if "matroska" not in fmt or len(container.streams) != 1 or not container.duration:
        return None
    header_s = container.duration / av.time_base
    fps = _fps(vs) or 0.0
    decoded_s = (last_pts or 0.0) + (1.0 / fps if fps else 0.0)
    if decoded_s < 0.9 * header_s - 0.5:
        return f"the header says {header_s:.1f} s but frames stop at {decoded_s:.1f} s"
    return None


def check_complete(path: str | Path, limits: MediaLimits = DEFAULT_LIMITS) -> int:
    """Demux (no decoding) the video stream's packets and refuse a file that is cut short
    of what its header declares (a truncated upload); returns the packet count."""
    p = Path(path)
    if p.is_dir():
        return len(list_frame_files(p))
    opened = _open_checked(p, limits, threads=1)
    container, vs = opened.container, opened.stream
    count, last_pts = 0, None
    try:
        try:
            for packet in container.demux(vs):
                if packet.size <= 0:
                    continue
                count += 1
                check_count(count, limits, f"video {p.name!r}")
                if packet.pts is not None and packet.time_base is not None:
                    last_pts = float(packet.pts * packet.time_base)
        except FFmpegError as e:
            raise _unreadable(p, f"demuxing failed after packet {count} ({e.strerror or e})") from e
        if count == 0:
            raise _unreadable(p, "it contains no video packets")
        problem = _truncation(container, vs, vs.frames or None, count, last_pts)
        if problem:
            raise _unreadable(p, problem.replace("decode", "are in the file"))
        return count
    finally:
        container.close()


def count_frames(path: str | Path) -> int:
    """Number of frames: the header's count, else packets counted by demuxing (no decode)."""
    p = Path(path)
    if p.is_dir():
        return len(list_frame_files(p))
    opened = _open_checked(p, MediaLimits(max_frames=2**62, max_duration_s=float(2**62)))
    container, vs = opened.container, opened.stream
    try:
        if vs.frames:
            return int(vs.frames)
        try:
            return sum(1 for pkt in container.demux(vs) if pkt.size > 0)
        except FFmpegError as e:
            raise _unreadable(p, f"demuxing failed ({e.strerror or e})") from e
    finally:
        container.close()


# ---------------------------------------------------------------- background decoding

_END = object()


@dataclass
class _Failure:
    error: BaseException


class BackgroundDecoder:
    """Decode ``iter_frames`` in a thread into a bounded queue, so decoding never stalls
    the model. Iterate it like ``iter_frames``; decoder errors re-raise in the consumer.
    Use as a context manager or call ``close()`` to stop the thread early.

    ``prepare``, if given, runs on the decoder thread and its result is what the consumer
    gets for each frame (e.g. the frame with its model-size copy), keeping per-frame work
    off the thread that steps the model.
    """

    def __init__(
        self,
        path: str | Path,
        limits: MediaLimits = DEFAULT_LIMITS,
        start: int = 0,
        end: int | None = None,
        stride: int = 1,
        queue_size: int = 8,
        threads: int = 0,
        prepare: Callable[[Frame], Any] | None = None,
    ) -> None:
        self._frames = iter_frames(path, limits, start, end, stride, threads)
        self._prepare = prepare
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._run, name="isvos-decoder", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for frame in self._frames:
                if not self._put(frame if self._prepare is None else self._prepare(frame)):
                    return
            self._put(_END)
        except BaseException as e:  # forwarded to the consumer
            self._put(_Failure(e))
        finally:
            close = getattr(self._frames, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> BackgroundDecoder:
        return self

    def __next__(self) -> Any:  # a Frame, or what ``prepare`` made of it
        while not self._done:
            try:
                item = self._queue.get(timeout=0.05)
            except queue.Empty:
                if self._stop.is_set() or not self._thread.is_alive() and self._queue.empty():
                    self._done = True
                continue
            if item is _END:
                self._done = True
            elif isinstance(item, _Failure):
                self._done = True
                raise item.error
            else:
                return item
        raise StopIteration

    def close(self, timeout: float = 5.0) -> None:
        """Stop the decoding thread and drop queued frames."""
        self._stop.set()
        self._done = True
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        """Whether the decoding thread is still running."""
        return self._thread.is_alive()

    def __enter__(self) -> BackgroundDecoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
