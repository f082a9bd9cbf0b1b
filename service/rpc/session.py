"""One ``Track`` stream: its frames through the segmentation loop, results back as they come.

- The first request opens (or resumes) the session; frames follow. The session's step index
  counts processed frames (the client's indices only have to increase); the processing size
  comes from the first frame, and every frame must have that size.
- Backpressure: ``every_frame`` reads the next request only when the loop wants the next
  frame (HTTP/2 flow control holds the client back); ``latest`` reads continuously and keeps
  only the newest frame (frames with masks are never dropped), reporting the dropped indices
  with the next result. Results wait in a small queue; a slow reader stalls the loop, never
  a buffer that grows.
- Resume: the record is saved (``StreamStore``) with each memorised frame and when the stream
  ends abnormally; a client reconnecting with its token and the last index it received gets
  the results it missed from the cache, resends frames after ``resume_after_index``, and
  continues with results identical to an unbroken stream.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, field

import numpy as np

from isvos.config import get_config
from isvos.errors import IsvosError
from isvos.limits import MIN_PROCESSING_SIDE
from isvos.presets import get_preset
from isvos.processing import processing_size, resize_frame
from isvos.record import encode_slot
from service.backends.base import Backend
from service.logs import log_event
from service.media.base import Frame
from service.media.masks import encode_indexed_png
from service.media.rle import encode_rle
from service.rpc.gen import segmentation_pb2 as pb
from service.rpc.images import decode_image, decode_masks
from service.rpc.store import StreamStore
from service.runner import FrameInput, Resume, SessionPlan, prompt_masks, run_session
from service.settings import Settings

log = logging.getLogger("isvos.grpc")
RESULT_QUEUE = 16
EARLIER_CONNECTION_S = 10.0  # how long a resume waits for the earlier connection to end


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass
class _FrameMeta:
    client_index: int
    capture_time_us: int
    received_time_us: int
    dropped: list[int] = field(default_factory=list)
    taken: float = 0.0  # perf_counter when the server started on the frame (decoding)


class _End(Exception):
    """The client closed its side (EOF) or sent Close."""


class TrackSession:
    def __init__(self, settings: Settings, backend: Backend, store: StreamStore, owner: str,
                 context, live: dict | None = None) -> None:  # fmt: skip
        self.live = live if live is not None else {}  # session id -> the task serving it
        self.settings = settings
        self.backend = backend
        self.store = store
        self.owner = owner
        self.context = context
        self.limits = settings.limits.media()
        self.loop = asyncio.get_running_loop()
        self.results: asyncio.Queue = asyncio.Queue(RESULT_QUEUE)
        self.frames: dict[int, _FrameMeta] = {}  # by session step
        self.unsaved: list[str] = []  # results since the last record save (writer thread)
        self.session_id = ""
        self.epoch = 0
        self.step = 0  # next session step
        self.last_client_index = -1
        self.suppress_through = -1  # results the resuming client has already
        self.size: tuple[int, int] | None = None
        self.psize: tuple[int, int] | None = None
        self.open_msg: pb.Open | None = None
        self.processed = 0
        self.dropped = 0
        self.closed_by_client = False
        self.pending_remove: list[int] = []
        self.handle = None
        self.stopping = False  # the call is over: the sink stops waiting for room
        self.step_clients: dict[int, int] = {}  # session step -> client index (recent)
        self.written_step = -1  # the last step whose result was produced
        self.closed: pb.Closed | None = None  # resumed after its client had closed it

    # ------------------------------------------------------------------ the call

    async def run(self) -> None:
        first = await self._read(self.settings.grpc.open_timeout_s, "the open message")
        if first is _EOF() or first is None or first.WhichOneof("request") != "open":
            raise IsvosError("failed_precondition", "the first message of a stream must be open")
        self.open_msg = first.open
        resume, cached = await self._open(first.open)
        self.live[self.session_id] = asyncio.current_task()
        await self.context.write(pb.TrackResponse(opened=pb.Opened(
            session_id=self.session_id, resume_token=self.session_id,
            processing_height=self.psize[0] if self.psize else 0,
            processing_width=self.psize[1] if self.psize else 0,
            resume_after_index=self.last_client_index,
        )))  # fmt: skip
        for item in cached:
            await self.context.write(_result_from_cache(item))
        if self.closed is not None:
            await self._close_again()
            return
        runner = asyncio.create_task(self._run_session(resume))
        try:
            while True:
                get = asyncio.ensure_future(self.results.get())
                await asyncio.wait({get, runner}, return_when=asyncio.FIRST_COMPLETED)
                if not get.done():
                    get.cancel()
                    break
                await self._send(get.result())
            while not self.results.empty():  # what the session queued before it ended
                await self._send(self.results.get_nowait())
            await runner  # raises what the session raised
        finally:
            self.stopping = True
            if not runner.done():
                runner.cancel()
                with contextlib.suppress(BaseException):
                    await runner

    async def _send(self, response: pb.TrackResponse) -> None:
        if response.HasField("result"):
            response.result.sent_time_us = now_us()
        await self.context.write(response)

    async def _open(self, msg: pb.Open) -> tuple[Resume | None, list[str]]:
        served = self.settings.backend.config
        if msg.config and msg.config != served:
            raise IsvosError(
                "invalid_argument", f"config {msg.config!r}: this server runs {served!r}"
            )
        _memory(msg)  # refuse bad options (and an unknown preset) now
        short_side = _short_side(msg, served)
        if not MIN_PROCESSING_SIDE <= short_side <= self.settings.limits.max_short_side:
            what = "short_side" if msg.short_side else f"preset {_preset(msg).name!r}'s size"
            raise IsvosError(
                "invalid_size",
                f"{what} {short_side} is outside {MIN_PROCESSING_SIDE}.."
                f"{self.settings.limits.max_short_side}",
            )
        if not msg.resume_token:
            self.session_id = uuid.uuid4().hex
            self.epoch = 1
            fields = {"owner": self.owner, "open": _b64(msg.SerializeToString())}
            await self.store.create(self.session_id, fields)
            log_event(log, "stream_opened", trace_id=self.session_id, owner=self.owner)
            return None, []
        token = msg.resume_token
        meta = await self.store.meta(token) if _plausible(token) else None
        if meta is None or meta.get("owner") != self.owner:
            raise IsvosError("not_found", "unknown or expired resume token")
        self.session_id = token
        if await self._end_earlier_connection(token):
            meta = await self.store.meta(token) or meta  # as the earlier connection left it
        self.open_msg = pb.Open.FromString(base64.b64decode(meta["open"]))
        self.epoch = await self.store.next_epoch(token)
        if "height" in meta:
            self.size = (int(meta["height"]), int(meta["width"]))
            self.psize = (int(meta["p_height"]), int(meta["p_width"]))
        if meta.get("closed"):
            # Its client had closed it and did not get the answer: what it missed, then Closed.
            self.last_client_index = int(meta["last_client_index"])
            self.closed = pb.Closed(frames=int(meta["closed_frames"]),
                                    dropped=int(meta["closed_dropped"]))  # fmt: skip
            await self.store.keep_closed(token)  # the epoch bump lengthened its life
            return None, await self.store.results_after(token, msg.last_received_index)
        record = await self.store.load_record(token)
        self.suppress_through = msg.last_received_index
        cached: list[str] = []
        resume = None
        if record is not None:
            self.step = record.header.next_frame_index
            self.last_client_index = int(meta["record_client_index"])
            resume = Resume(record, epoch=self.epoch << 16)
            cached = await self.store.results_after(token, msg.last_received_index)
            cached = [c for c in cached if int(c.split(":", 1)[0]) <= self.last_client_index]
        log_event(log, "stream_resumed", trace_id=token, epoch=self.epoch,
                  resume_after=self.last_client_index, cached=len(cached))  # fmt: skip
        return resume, cached

    async def _end_earlier_connection(self, token: str) -> bool:
        """A client resuming while this server still serves its earlier connection (a
        half-open socket after a network change): that call is ended first, saving its exact
        record and closing its backend session, so the resume can open the session again."""
        earlier = self.live.get(token)
        if earlier is None or earlier is asyncio.current_task() or earlier.done():
            return False
        earlier.cancel()
        await asyncio.wait({earlier}, timeout=EARLIER_CONNECTION_S)
        log_event(log, "stream_superseded", trace_id=token, ended=earlier.done())
        return True

    # ------------------------------------------------------------------ the session

    async def _run_session(self, resume: Resume | None) -> None:
        try:
            if self._policy() == pb.BACKPRESSURE_POLICY_LATEST:
                source = _Latest(self)
                reader = asyncio.create_task(source.read_all())
            else:
                source, reader = _EveryFrame(self), None
            inputs = self._inputs(source)
            first = await anext(inputs, None)
            if first is None:
                await self._finish()
                return
            plan = SessionPlan(self.session_id, self.size, self.psize,
                               _memory(self.open_msg), 1, self.epoch << 16)  # fmt: skip
            try:
                await run_session(
                    self.backend, plan, _chain(first, inputs), _Sink(self),
                    resume=resume, records=self.store.records(self.session_id, self.epoch,
                                                              self._on_save),
                    keep_open=True, on_open=self._opened,
                )  # fmt: skip
            finally:
                if reader is not None:
                    reader.cancel()
            await self._finish()
        except BaseException as exc:
            await self._save_on_break(exc)
            raise

    async def _close_again(self) -> None:
        """Wait for the resuming client's close (it has no frame left to send): Closed."""
        try:
            message = await self.next_request()
        except _End:
            await self.context.write(pb.TrackResponse(closed=self.closed))
            log_event(log, "stream_closed_again", trace_id=self.session_id)
            return
        raise IsvosError(
            "failed_precondition",
            f"frame {message.frame.index} came after the stream was closed; open a new stream",
        )

    def _opened(self, handle) -> None:
        self.handle = handle

    async def _inputs(self, source):
        """FrameInputs from the source's frame messages (decoded on a thread)."""
        if False:  # pragma: no cover - makes this an async generator before the first await
            yield None
        async for message, meta in source.frames():
            frame = message.frame
            if frame.index <= self.last_client_index:
                raise IsvosError(
                    "invalid_argument",
                    f"frame index {frame.index} does not follow {self.last_client_index}: "
                    "indices must increase",
                )
            meta.taken = time.perf_counter()  # the server's time starts with decoding
            image, masks = await asyncio.to_thread(self._decode, frame)
            self.last_client_index = frame.index
            step = self.step
            self.step += 1
            self.frames[step] = meta
            self.step_clients[step] = frame.index
            self.step_clients.pop(step - 4 * RESULT_QUEUE - 64, None)  # recent steps only
            remove, self.pending_remove = tuple(self.pending_remove), []
            yield FrameInput(Frame(step, None, image), resize_frame(image, self.psize), masks,
                             remove)  # fmt: skip

    def _decode(self, frame: pb.Frame):
        image = decode_image(frame.image, self.limits)
        size = image.shape[:2]
        if self.size is None:
            short = _short_side(self.open_msg, self.settings.backend.config)
            self.size = size
            self.psize = processing_size(size[0], size[1], short)
        elif size != self.size:
            raise IsvosError(
                "invalid_argument",
                f"frame {frame.index} is {size[1]}x{size[0]}; this stream's frames are "
                f"{self.size[1]}x{self.size[0]}",
            )
        masks = None
        if frame.HasField("masks"):
            labels = decode_masks(frame.masks, self.size, self.limits)
            max_objects = _memory(self.open_msg)["max_objects"]
            masks = prompt_masks(labels, self.psize, frame.index, max_objects)
        return image, masks

    def _on_save(self, header: bytes) -> tuple[dict[str, str], list[str]]:
        """Fields and results written with a record header (on the writer thread's call)."""
        step = json.loads(header)["next_frame_index"] - 1
        results, self.unsaved = self.unsaved, []
        fields = {"record_client_index": str(self.step_clients[step]),
                  "height": str(self.size[0]), "width": str(self.size[1]),
                  "p_height": str(self.psize[0]), "p_width": str(self.psize[1])}  # fmt: skip
        return fields, results

    async def _save_on_break(self, exc: BaseException) -> None:
        """The stream ends abnormally: save the exact record for a resume, then close the
        session (a resume opens it again, here or on another server)."""
        handle = self.handle
        if handle is None:
            return
        try:
            # A stream its client had closed broke on the way out (say, Redis went away as
            # the last record was written): the periodic record is the resume point.
            if not self.closed_by_client:
                await self._save_exact_record(handle)
        except BaseException as error:  # noqa: BLE001 - the periodic record stays
            log_event(log, "stream_save_failed", logging.WARNING, trace_id=self.session_id,
                      error=f"{type(error).__name__}: {error}")  # fmt: skip
        finally:
            with contextlib.suppress(BaseException):
                await self.backend.close(handle)
        log_event(log, "stream_broken", trace_id=self.session_id,
                  error=type(exc).__name__, frames=self.processed)  # fmt: skip

    async def _save_exact_record(self, handle) -> None:
        record = await self.backend.record(handle)
        if record.header.next_frame_index != self.written_step + 1:
            # Frames were stepped whose results were never produced: a record past them
            # would lose them. The last periodic record (saved as frames are written)
            # stays the resume point.
            raise IsvosError("failed_precondition", "results are behind the session")
        store = self.store.records(self.session_id, self.epoch, self._on_save)
        for _, payload in record.slots():  # every slot first, then the header naming them
            await store.put_slot(payload.frame_index, encode_slot(payload))
        await store.save(record.header, None)

    async def _finish(self) -> None:
        if self.handle is not None:
            handle, self.handle = self.handle, None  # closed once, also if what follows fails
            with contextlib.suppress(IsvosError):
                await self.backend.close(handle)
        if self.closed_by_client:
            results, self.unsaved = self.unsaved, []
            fields = {"closed_frames": str(self.processed), "closed_dropped": str(self.dropped),
                      "last_client_index": str(self.last_client_index)}  # fmt: skip
            await self.store.close(self.session_id, self.epoch, fields, results)
            await self.results.put(pb.TrackResponse(closed=pb.Closed(
                frames=self.processed, dropped=self.dropped)))  # fmt: skip
        log_event(log, "stream_closed", trace_id=self.session_id, frames=self.processed,
                  dropped=self.dropped)  # fmt: skip

    def _policy(self) -> int:
        return self.open_msg.policy

    # ------------------------------------------------------------------ requests

    async def _read(self, timeout_s: float, what: str):
        try:
            return await asyncio.wait_for(self.context.read(), timeout_s)
        except TimeoutError:
            raise IsvosError(
                "request_timeout", f"{what} did not come within {timeout_s:g} s"
            ) from None

    async def next_request(self):
        """The next request that is not a frame is handled here; frames are returned."""
        while True:
            message = await self._read(self.settings.grpc.idle_timeout_s, "the next message")
            if message is _EOF() or message is None:
                raise _End
            kind = message.WhichOneof("request")
            if kind == "frame":
                return message
            if kind == "remove_objects":
                ids = [int(i) for i in message.remove_objects.object_ids]
                if not ids:
                    raise IsvosError("invalid_argument", "remove_objects names no object")
                self.pending_remove += ids
            elif kind == "close":
                self.closed_by_client = True
                raise _End
            elif kind == "open":
                raise IsvosError("failed_precondition", "the stream is already open")
            else:
                raise IsvosError("invalid_argument", "an empty request")


class _EveryFrame:
    def __init__(self, session: TrackSession) -> None:
        self.session = session

    async def frames(self):
        while True:
            try:
                message = await self.session.next_request()
            except _End:
                return
            yield message, _FrameMeta(message.frame.index, message.frame.capture_time_us,
                                      now_us())  # fmt: skip


class _Latest:
    """Reads continuously; keeps the newest frame (and every frame with masks)."""

    def __init__(self, session: TrackSession) -> None:
        self.session = session
        self.waiting: list[tuple] = []
        self.dropped: list[int] = []
        self.event = asyncio.Event()
        self.ended = False
        self.error: BaseException | None = None

    async def read_all(self) -> None:
        try:
            while True:
                message = await self.session.next_request()
                meta = _FrameMeta(message.frame.index, message.frame.capture_time_us, now_us())
                keep = [w for w in self.waiting if w[0].frame.HasField("masks")]
                self.dropped += [w[1].client_index for w in self.waiting
                                 if not w[0].frame.HasField("masks")]  # fmt: skip
                self.waiting = [*keep, (message, meta)]
                self.event.set()
        except _End:
            self.ended = True
        except BaseException as exc:  # noqa: BLE001 - handed to the loop
            self.error = exc
        self.event.set()

    async def frames(self):
        while True:
            while not self.waiting:
                if self.error is not None:
                    raise self.error
                if self.ended:
                    return
                self.event.clear()
                await self.event.wait()
            message, meta = self.waiting.pop(0)
            meta.dropped, self.dropped = self.dropped, []
            self.session.dropped += len(meta.dropped)
            yield message, meta


class _Sink:
    """Results of the loop (on its writer thread) as responses, into the bounded queue."""

    def __init__(self, session: TrackSession) -> None:
        self.session = session

    def write(self, frame: Frame, labels: np.ndarray) -> None:
        s = self.session
        meta = s.frames.pop(frame.index)
        result = pb.FrameResult(
            index=meta.client_index, capture_time_us=meta.capture_time_us,
            height=labels.shape[0], width=labels.shape[1],
            step_ms=(time.perf_counter() - meta.taken) * 1e3,  # decode to encoded result
            dropped_indices=meta.dropped, received_time_us=meta.received_time_us,
        )  # fmt: skip
        if s.open_msg.mask_format == pb.MASK_FORMAT_INDEXED_PNG:
            result.indexed_png = encode_indexed_png(labels)
        else:
            ids = [int(i) for i in np.unique(labels) if i]
            for entry in encode_rle(labels, ids):
                result.objects.add(object_id=entry["id"],
                                   rle_counts=entry["segmentation"]["counts"].encode())  # fmt: skip
        s.processed += 1
        s.written_step = frame.index
        s.unsaved.append(f"{meta.client_index}:{_b64(result.SerializeToString())}")
        if meta.client_index <= s.suppress_through:
            return  # the resuming client has it
        future = asyncio.run_coroutine_threadsafe(s.results.put(pb.TrackResponse(result=result)),
                                                  s.loop)  # fmt: skip
        while True:  # wait for room: a slow reader holds the loop back, nothing piles up
            try:
                future.result(0.5)
                return
            except TimeoutError:
                if s.stopping:
                    future.cancel()
                    raise IsvosError("cancelled", "the stream ended") from None

    def finish(self) -> None:
        pass

    def close(self) -> None:
        pass


def _preset(msg: pb.Open):
    try:
        return get_preset(msg.preset)
    except ValueError as exc:
        raise IsvosError("invalid_argument", str(exc)) from None


def _short_side(msg: pb.Open, config: str) -> int:
    """The processing short side: the stream's own, else its preset's for ``config``."""
    return msg.short_side or _preset(msg).short_side(get_config(config).default_short_side)


def _memory(msg: pb.Open) -> dict:
    """The stream's memory options: those it set, the preset's for the rest."""
    from isvos.config import MemoryOptions

    options = msg.memory
    preset = _preset(msg)
    values = {"max_memory_frames": options.max_memory_frames or preset.max_memory_frames,
              "mem_every": options.mem_every or preset.mem_every,
              "top_k": options.top_k or preset.top_k,
              "max_objects": options.max_objects or 16}  # fmt: skip
    try:
        MemoryOptions.from_dict(values)
    except ValueError as exc:
        raise IsvosError("invalid_argument", f"memory options: {exc}") from exc
    return values


async def _chain(first, rest):
    yield first
    async for item in rest:
        yield item


def _result_from_cache(item: str) -> pb.TrackResponse:
    result = pb.FrameResult.FromString(base64.b64decode(item.split(":", 1)[1]))
    return pb.TrackResponse(result=result)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _plausible(token: str) -> bool:
    return len(token) == 32 and all(c in "0123456789abcdef" for c in token)


def _EOF():  # noqa: N802 - grpc.aio's end-of-stream sentinel
    import grpc

    return grpc.aio.EOF
