"""The ``triton`` backend: the ISVOS engine inside Triton, sessions kept on the server.

Each session is a Triton sequence whose string correlation id is ``"<session id>:<epoch>"``:
``open``/``prime`` start it, ``close`` ends it, every step carries its video frame index (a
repeat of a recent one returns the cached result, a gap is refused). asyncio throughout
(``tritonclient.grpc.aio``); ``SyncBackend`` wraps it for blocking callers. Torch-free.

Recovery (DESIGN decisions 3, 4): the client keeps each session's latest record without
downloading pixels. The server attaches the record *header* to every response that changes
it; the client keeps the processing-size frame and label map of each memorised step (it
sent one and received the other) and assembles the full record only when needed. When the
server answers ``not_found`` (restart, idle eviction, another pod), the client primes a new
session with the next epoch from that record, resuming at the failed frame, and re-sends the
failed request: one record plus one request. A per-session lock makes concurrent failures
recover once. ``unavailable`` errors are retried for ``retry_unavailable_s`` (steps are
idempotent).

Several servers (``url`` a list, or ``dns:///NAME:PORT``; ``placement.Endpoints``): a
session is opened on the least-loaded server and every later request goes there. When that
server stops answering (``unavailable`` for ``failover_after_s``) it is marked down and the
session is re-primed on another one, the same way; a prime that a server refuses (draining,
full, or a record made with other weights there) is tried on the next. ``on_place(session id,
endpoint)`` is told of every placement, so callers can record where a session lives.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from tritonclient.utils import InferenceServerException

from isvos import triton_contract as C
from isvos.limits import REPLAY_WINDOW
from isvos.record import RecordHeader, SessionRecord, SlotPayload

from ..base import BackendError, SessionHandle, StepOutput, as_record
from .placement import Endpoints
from .wire import build_inputs, decode_result, error_of, step_fields, step_output

# Codes after which a start (open or prime) is tried on another server.
_TRY_ELSEWHERE = ("unavailable", "resource_exhausted", "record_mismatch")


@dataclass
class _SessionState:
    """What the client needs to rebuild a session elsewhere."""

    processing_size: tuple[int, int]
    options: dict
    frame_stride: int
    endpoint: str = ""  # the server that holds the session
    header: RecordHeader | None = None  # latest record header (from the server)
    frames: dict[int, SlotPayload] = field(default_factory=dict)  # the header's slots
    next_index: int | None = None  # next frame the session expects
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def adopt(self, header_json: bytes) -> RecordHeader:
        """Take the server's latest header; drop frames no longer in the memory bank."""
        self.header = RecordHeader.from_json(header_json)
        kept = {slot.frame_index for slot in self.header.slots}
        for index in [i for i in self.frames if i not in kept]:
            del self.frames[index]
        return self.header

    def record(self) -> SessionRecord:
        """The full record as of now: the server's last header, advanced to the next frame
        this client will send (steps that memorise nothing change nothing else)."""
        if self.header is None:
            raise BackendError("failed_precondition", "the session has no record yet")
        header = dataclasses.replace(self.header)
        if self.next_index is not None and self.next_index > (header.next_frame_index or 0):
            header.next_frame_index = self.next_index
        return SessionRecord.from_parts(header, self.frames)


@dataclass
class _Start:
    """A request that starts a session on the server (open or prime)."""

    kind: str  # C.OPEN or C.PRIME
    fields: dict


class _RetryClock:
    """Backoff for ``unavailable`` answers: 50 ms doubling to 1 s, within ``budget_s``."""

    def __init__(self, budget_s: float) -> None:
        self.deadline = time.monotonic() + budget_s
        self.delay = 0.05

    def next_delay(self, error: BackendError) -> float:
        """Seconds to wait before retrying, or raise ``error`` when it is not retryable."""
        if error.code != "unavailable" or time.monotonic() + self.delay > self.deadline:
            raise error
        delay, self.delay = self.delay, min(self.delay * 2, 1.0)
        return delay


class _Stream:
    """One bidirectional gRPC inference stream: ``send`` requests, ``receive`` in order."""

    def __init__(self, client) -> None:
        self._queue: asyncio.Queue = asyncio.Queue()
        self._responses = client.stream_infer(self._requests())
        self._iterator = self._responses.__aiter__()

    async def _requests(self):
        while True:
            item = await self._queue.get()
            if item is None:
                return
            yield item

    def send(self, request: dict) -> None:
        self._queue.put_nowait(request)

    async def receive(self):
        return await self._iterator.__anext__()

    def close(self) -> None:
        self._queue.put_nowait(None)
        self._responses.cancel()


class TritonBackend:
    """Sessions on Triton servers over ``tritonclient.grpc.aio``; use it from one loop.

    ``stream`` pipelines a session's frames over one gRPC stream, up to ``window`` frames
    in flight (at most ``REPLAY_WINDOW``, what the server caches for replays)."""

    name = "triton"

    def __init__(
        self,
        url: str | list[str] = "127.0.0.1:8001",
        *,
        model_name: str = C.MODEL_NAME,
        timeout_s: float | None = 120.0,
        keep_records: bool = True,
        recover: bool = True,
        retry_unavailable_s: float = 30.0,
        failover_after_s: float = 3.0,
        on_place: Callable[[str, str], None] | None = None,
    ) -> None:
        urls = [url] if isinstance(url, str) else list(url)
        self.endpoints = Endpoints(urls, self._stats_of)
        self.url = urls[0]
        self.model_name = model_name
        self.timeout_s = timeout_s
        self.keep_records = keep_records
        self.recover = recover and keep_records
        self.retry_unavailable_s = retry_unavailable_s
        self.failover_after_s = failover_after_s
        self.on_place = on_place
        self.sessions: dict[str, _SessionState] = {}
        self.counters: Counter = Counter()

    @property
    def client(self):
        """The first server's client (one-server callers and tests)."""
        return self.endpoints.client(self.endpoints.urls()[0])

    async def aclose(self) -> None:
        await self.endpoints.aclose()

    async def __aenter__(self) -> TritonBackend:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ protocol

    async def open(
        self,
        session_id: str,
        processing_size: tuple[int, int],
        options: dict | None = None,
        *,
        frame_stride: int = 1,
        epoch: int = 0,
    ) -> SessionHandle:
        self._refuse_open_id(session_id)
        size = (int(processing_size[0]), int(processing_size[1]))
        state = _SessionState(size, dict(options or {}), int(frame_stride))
        handle = SessionHandle(session_id, "", size, epoch)
        await self._place(handle, state, self._open_request(state))
        self.sessions[session_id] = state
        return handle

    async def prime(
        self,
        session_id: str,
        record: SessionRecord | bytes,
        *,
        epoch: int = 0,
        resume_index: int | None = None,
    ) -> SessionHandle:
        """A session restored on the server from ``record`` (e.g. persisted by a worker)."""
        self._refuse_open_id(session_id)
        decoded = as_record(record)
        header = decoded.header
        header.validate_resume(resume_index)
        state = _SessionState(header.processing_size, dict(header.options), header.frame_stride)
        state.header = header
        state.frames = dict(decoded.payloads)
        state.next_index = header.next_frame_index if resume_index is None else resume_index
        handle = SessionHandle(session_id, "", header.processing_size, epoch)
        await self._place(handle, state, self._prime_request(state, decoded, resume_index))
        self.sessions[session_id] = state
        return handle

    async def step(
        self,
        handle: SessionHandle,
        frame_index: int,
        image: np.ndarray,
        masks: dict[int, np.ndarray] | None = None,
    ) -> StepOutput:
        state = self._state(handle)
        fields = step_fields(frame_index, image, masks)
        out = await self._call(handle, state, C.STEP, fields, resume=frame_index)
        return self._after_step(state, out, frame_index, image)

    async def remove_objects(self, handle: SessionHandle, object_ids: list[int]) -> RecordHeader:
        state = self._state(handle)
        ids = np.asarray([int(i) for i in object_ids], np.int32)
        out = await self._call(handle, state, C.REMOVE, {C.OBJECT_IDS: ids}, state.next_index)
        if out["record"] is not None:
            return state.adopt(out["record"])
        return await self._server_header(handle, state)

    async def record(self, handle: SessionHandle) -> SessionRecord:
        """The session's full record: assembled from what the client holds when it keeps
        records, else fetched from the server (an operator request kind)."""
        state = self._state(handle)
        if self.keep_records and state.header is not None:
            return state.record()
        out = await self._call(handle, state, C.RECORD_KIND, {}, state.next_index)
        if out["record"] is None:
            raise BackendError("internal", "the server sent no record")
        return as_record(out["record"])

    async def close(self, handle: SessionHandle) -> None:
        state = self.sessions.pop(handle.session_id, None)
        endpoint = state.endpoint if state is not None else handle.endpoint
        try:
            await self._infer(C.CLOSE, {}, C.correlation_id(handle.session_id, handle.epoch),
                              endpoint, end=True, retry=False)  # fmt: skip
        except BackendError as exc:
            if exc.code not in ("not_found", "unavailable"):  # already gone: not an error
                raise

    async def stats(self, endpoint: str | None = None) -> dict:
        """A serving instance's statistics (operator request kind): ``endpoint``'s, the one
        server's, or with several ``{"servers": {url: stats or {"error": ...}}}``."""
        if endpoint is not None or not self.endpoints.several:
            return await self._stats_of(endpoint or self.endpoints.urls()[0], retry=True)
        servers = {}
        for url in self.endpoints.urls():
            try:
                servers[url] = await self._stats_of(url)
            except BackendError as exc:
                servers[url] = {"error": exc.code, "message": exc.message}
        return {"servers": servers}

    async def _stats_of(self, endpoint: str, retry: bool = False) -> dict:
        corr = C.correlation_id(f"stats-{uuid.uuid4().hex}", 0)
        out = await self._infer(C.STATS, {}, corr, endpoint, start=True, end=True, retry=retry)
        return out["info"]

    async def propose(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A one-request sequence (no session) on the first server not marked down."""
        urls = self.endpoints.urls()
        if not urls:
            raise BackendError("unavailable", f"no Triton server found at {self.endpoints.targets}")
        endpoint = next((u for u in urls if not self.endpoints.is_down(u)), urls[0])
        corr = C.correlation_id(f"propose-{uuid.uuid4().hex}", 0)
        out = await self._infer(C.PROPOSE, {C.IMAGE: image}, corr, endpoint, start=True, end=True)
        objectness = np.asarray(out["info"]["objectness"], np.float32)
        return objectness, np.asarray(out[C.PROBABILITIES], np.float16)

    async def ready(self) -> bool:
        """Some server has the model ready."""
        for url in self.endpoints.urls():
            try:
                client = self.endpoints.client(url)
                if await client.is_model_ready(self.model_name, client_timeout=5):
                    return True
            except InferenceServerException:
                continue
        return False

    # ------------------------------------------------------------------ streaming

    async def stream(self, handle: SessionHandle, frames, *, window: int = 2):
        """Step every ``(frame_index, image, masks)`` of the async iterable ``frames`` over
        one gRPC stream, up to ``window`` frames in flight; yields StepOutputs in order.

        When a frame fails (the session was lost, the transport broke) the stream is
        dropped and that frame and every frame in flight are re-sent as unary steps, with
        the usual recovery; frames the server had already answered are replayed from its
        cache. Streaming then resumes on a new stream."""
        if not 1 <= window <= REPLAY_WINDOW:
            raise BackendError("invalid_argument", f"window must be in 1..{REPLAY_WINDOW}")
        state = self._state(handle)
        source = frames.__aiter__()
        inflight: deque[tuple[int, np.ndarray, dict | None]] = deque()
        stream = None
        exhausted = False
        try:
            while True:
                while not exhausted and len(inflight) < window:
                    try:
                        frame = await source.__anext__()
                    except StopAsyncIteration:
                        exhausted = True
                        break
                    if stream is None:
                        stream = _Stream(self.endpoints.client(state.endpoint))
                    inflight.append(frame)
                    stream.send({
                        "model_name": self.model_name,
                        "inputs": build_inputs(C.STEP, step_fields(*frame)),
                        "sequence_id": C.correlation_id(handle.session_id, handle.epoch),
                    })  # fmt: skip
                    self.counters["requests"] += 1
                if not inflight:
                    break
                frame_index, image, masks = inflight.popleft()
                try:
                    result, error = await stream.receive()
                except Exception as exc:  # noqa: BLE001 - the transport broke
                    result, error = None, exc
                if error is None:
                    yield self._after_step(state, decode_result(result), frame_index, image)
                    continue
                self.counters["stream_fallbacks"] += 1
                stream.close()
                stream = None
                pending = [(frame_index, image, masks), *inflight]
                inflight.clear()
                for item in pending:
                    yield await self.step(handle, *item)
        finally:
            if stream is not None:
                stream.close()

    # ------------------------------------------------------------------ sessions

    def _refuse_open_id(self, session_id: str) -> None:
        if session_id in self.sessions:
            raise BackendError("already_exists", f"session {session_id} is already open")

    def _state(self, handle: SessionHandle) -> _SessionState:
        try:
            return self.sessions[handle.session_id]
        except KeyError:
            raise BackendError("not_found", f"session {handle.session_id} is not open") from None

    def _session_options(self, state: _SessionState) -> str:
        options = dict(state.options)
        options[C.FRAME_STRIDE] = state.frame_stride
        if self.keep_records:
            options[C.ATTACH_RECORD] = "header"
        return json.dumps(options)

    def _open_request(self, state: _SessionState) -> _Start:
        fields = {
            C.PROCESSING_SIZE: np.asarray(state.processing_size, np.int32),
            C.OPTIONS: self._session_options(state),
        }
        return _Start(C.OPEN, fields)

    def _prime_request(
        self, state: _SessionState, record: SessionRecord, resume_index: int | None
    ) -> _Start:
        fields = {C.RECORD: record.to_bytes(), C.OPTIONS: self._session_options(state)}
        if resume_index is not None:
            fields[C.FRAME_INDEX] = np.asarray([resume_index], np.int64)
        return _Start(C.PRIME, fields)

    def _recovery(self, handle: SessionHandle, state: _SessionState, resume: int | None) -> _Start:
        """Move ``handle`` to the next epoch and plan its start there, expecting frame
        ``resume``: a fresh open when nothing was memorised yet (exact), else a prime from
        the latest record."""
        handle.epoch += 1
        if state.header is None:
            self.counters["reopens"] += 1
            return self._open_request(state)
        record = state.record()
        next_index = state.header.next_frame_index
        if resume is None or next_index is None or resume < next_index:
            resume = next_index
        start = self._prime_request(state, record, resume)
        self.counters["primes"] += 1
        self.counters["prime_bytes"] += len(start.fields[C.RECORD])
        return start

    def _after_step(
        self, state: _SessionState, out: dict, frame_index: int, image: np.ndarray
    ) -> StepOutput:
        output = step_output(out, frame_index)
        if output.memorised and self.keep_records:  # replays too: a lost answer
            state.frames[output.frame_index] = SlotPayload(
                output.frame_index, np.array(image, np.uint8), output.labels
            )
        if out["record"] is not None:
            output.header = state.adopt(out["record"])
        if not output.replayed:
            state.next_index = output.frame_index + state.frame_stride
        return output

    async def _server_header(self, handle: SessionHandle, state: _SessionState) -> RecordHeader:
        out = await self._call(handle, state, C.RECORD_KIND, {}, state.next_index)
        return as_record(out["record"]).header

    # ------------------------------------------------------------------ transport

    async def _place(
        self, handle: SessionHandle, state: _SessionState, start: _Start,
        avoid: frozenset[str] = frozenset(),
    ) -> None:  # fmt: skip
        """Start the session on the least-loaded server that accepts it (``avoid`` first
        excluded); the last refusal is raised when none does."""
        tried = set(avoid)
        while True:
            endpoint = await self.endpoints.choose(frozenset(tried))
            try:
                await self._start(handle, start, endpoint)
            except BackendError as exc:
                tried.add(endpoint)
                if not self.endpoints.several or exc.code not in _TRY_ELSEWHERE:
                    raise
                if exc.code == "unavailable":
                    self.endpoints.mark_down(endpoint)
                if set(self.endpoints.urls()) <= tried:
                    if exc.code == "record_mismatch":
                        raise BackendError(exc.code, f"{exc.message} (on every Triton server: "
                                           "the session cannot move)") from None  # fmt: skip
                    raise
                continue
            state.endpoint = handle.endpoint = endpoint
            if self.on_place is not None:
                self.on_place(handle.session_id, endpoint)
            return

    async def _start(self, handle: SessionHandle, start: _Start, endpoint: str) -> None:
        corr = C.correlation_id(handle.session_id, handle.epoch)
        try:  # with several servers a refusal is tried elsewhere at once, not here again
            await self._infer(start.kind, start.fields, corr, endpoint, start=True,
                              retry=not self.endpoints.several)  # fmt: skip
        except BackendError as exc:
            if exc.code != "already_exists":  # that sequence is live: never end it
                await self._end_quietly(corr, endpoint)  # free Triton's sequence slot at once
            raise

    async def _end_quietly(self, corr: str, endpoint: str) -> None:
        try:
            await self._infer(C.CLOSE, {}, corr, endpoint, end=True, retry=False)
        except BackendError:
            pass

    async def _call(
        self,
        handle: SessionHandle,
        state: _SessionState,
        kind: str,
        fields: dict,
        resume: int | None,
    ) -> dict:
        epoch, endpoint = handle.epoch, state.endpoint
        several = self.endpoints.several
        corr = C.correlation_id(handle.session_id, epoch)
        retry_s = self.failover_after_s if several else None
        try:
            return await self._infer(kind, fields, corr, endpoint, retry_s=retry_s)
        except BackendError as exc:
            lost = exc.code == "unavailable" and several  # that server is gone: move
            if not self.recover or not (exc.code == "not_found" or lost):
                raise
        async with state.lock:
            if handle.epoch == epoch:  # nobody recovered the session meanwhile
                if lost:
                    self.endpoints.mark_down(endpoint)
                    self.counters["failovers"] += 1
                else:
                    await self._end_quietly(corr, endpoint)
                start = self._recovery(handle, state, resume)
                await self._place(handle, state, start,
                                  frozenset({endpoint}) if lost else frozenset())  # fmt: skip
        self.counters["resent"] += 1
        return await self._infer(kind, fields, C.correlation_id(handle.session_id, handle.epoch),
                                 state.endpoint)  # fmt: skip

    async def _infer(
        self,
        kind: str,
        fields: dict,
        corr: str,
        endpoint: str,
        *,
        start: bool = False,
        end: bool = False,
        retry: bool = True,
        retry_s: float | None = None,
    ) -> dict:
        """One request to ``endpoint``; ``unavailable`` is retried for ``retry_s`` (default
        ``retry_unavailable_s``; none without ``retry``)."""
        inputs = build_inputs(kind, fields)
        budget = (self.retry_unavailable_s if retry_s is None else retry_s) if retry else 0.0
        clock = _RetryClock(budget)
        client = self.endpoints.client(endpoint)
        while True:
            self.counters["requests"] += 1
            self.counters[f"requests_{kind}"] += 1
            try:
                result = await client.infer(
                    self.model_name, inputs, sequence_id=corr, sequence_start=start,
                    sequence_end=end, client_timeout=self.timeout_s,
                )  # fmt: skip
                return decode_result(result)
            except InferenceServerException as exc:
                error = error_of(exc)
            await asyncio.sleep(clock.next_delay(error))
