"""The ``triton`` backend: the ISVOS engine inside Triton, sessions kept on the server.

Each session is a Triton sequence whose string correlation id is ``"<session id>:<epoch>"``
(``SessionHandle.epoch``): ``open``/``prime`` start it, ``close`` ends it, every step carries
its frame index (a repeat returns the cached result, a gap is refused). The contract is
``service.triton_contract``; docs/triton.md describes it. Torch-free.

Recovery (DESIGN decisions 3, 4): the client keeps each session's latest record without
re-downloading frames. The server attaches a *skeleton* record (the record without pixels:
slots, objects, pins, counters) to every response that changes it; the client keeps the
processing-size frame and label map of each memorised step (it sent one and received the
other) and assembles the full record only when needed. When the server answers
``unknown_session`` (restart, idle eviction, another pod), the client primes a new session
with the next epoch from that record, resuming at the failed frame, and re-sends the failed
request: one record plus one request, nothing more. ``unavailable`` errors are retried for
``retry_unavailable_s`` (steps are idempotent).
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aiogrpcclient
from tritonclient.utils import InferenceServerException

from service import triton_contract as C

from .base import BackendError, SessionHandle, StepOutput, open_session_of, refuse_open_id

_NP_TO_TRITON = {
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int64): "INT64",
    np.dtype(np.object_): "BYTES",
}
_RETRYABLE_STATUS = ("StatusCode.UNAVAILABLE",)


@dataclass
class _SessionState:
    """What the client needs to rebuild a session elsewhere."""

    processing_size: tuple[int, int]
    options: dict
    skeleton: bytes | None = None  # latest record without pixels (from the server)
    frames: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    next_index: int = 0  # next frame the session expects
    lock: threading.Lock = field(default_factory=threading.Lock)


# ---------------------------------------------------------------------- records


def record_header(record: bytes) -> dict:
    """The JSON header of a session record (``isvos.engine.record`` format), torch-free."""
    with np.load(io.BytesIO(record), allow_pickle=False) as archive:
        return json.loads(archive["header"].tobytes().decode())


def assemble_record(skeleton: bytes, frames: dict[int, tuple[np.ndarray, np.ndarray]]) -> bytes:
    """A full session record from a skeleton and the frames / label maps of its slots."""
    with np.load(io.BytesIO(skeleton), allow_pickle=False) as archive:
        header_array = archive["header"]
    header = json.loads(header_array.tobytes().decode())
    arrays = {"header": header_array}
    for i, slot in enumerate(header["slots"]):
        try:
            image, labels = frames[slot["frame_index"]]
        except KeyError:
            raise BackendError(
                C.FAILED_PRECONDITION,
                f"frame {slot['frame_index']} of the record is not held by this client",
            ) from None
        arrays[f"image_{i}"] = image
        arrays[f"labels_{i}"] = labels
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def split_record(record: bytes) -> tuple[dict, dict[int, tuple[np.ndarray, np.ndarray]]]:
    """(header, {frame index: (image, labels)}) of a full record."""
    with np.load(io.BytesIO(record), allow_pickle=False) as archive:
        header = json.loads(archive["header"].tobytes().decode())
        frames = {
            slot["frame_index"]: (archive[f"image_{i}"], archive[f"labels_{i}"])
            for i, slot in enumerate(header["slots"])
        }
    return header, frames


def _keep_skeleton(state: _SessionState, skeleton: bytes) -> None:
    """Adopt the server's latest skeleton; drop frames no longer in the memory bank."""
    state.skeleton = skeleton
    kept = {slot["frame_index"] for slot in record_header(skeleton)["slots"]}
    for index in [i for i in state.frames if i not in kept]:
        del state.frames[index]


def masks_to_wire(
    masks: dict[int, np.ndarray], size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """{id: bool mask} -> (uint8 label map, int32 ids). Overlaps go to the later id."""
    labels = np.zeros(size, np.uint8)
    ids = []
    for object_id, mask in masks.items():
        object_id = int(object_id)
        if not 1 <= object_id <= 255:
            raise BackendError(C.INVALID_OBJECTS, f"object id {object_id} is outside 1..255")
        mask = np.asarray(mask)
        if mask.shape != tuple(size):
            raise BackendError(
                C.INVALID_OBJECTS, f"mask of object {object_id} is {mask.shape}, expected {size}"
            )
        labels[mask.astype(bool)] = object_id
        ids.append(object_id)
    return labels, np.asarray(ids, np.int32)


# ---------------------------------------------------------------------- request building


def _input(name: str, array: np.ndarray):
    array = np.ascontiguousarray(array)[None]  # the batch dimension
    tensor = grpcclient.InferInput(name, list(array.shape), _NP_TO_TRITON[array.dtype])
    tensor.set_data_from_numpy(array)
    return tensor


def _bytes_input(name: str, data: bytes | str):
    value = data.encode() if isinstance(data, str) else data
    return _input(name, np.array([value], dtype=np.object_))


def _build(kind: str, **fields) -> list:
    inputs = [_bytes_input(C.KIND, kind)]
    for name, value in fields.items():
        if value is None:
            continue
        if name in (C.OPTIONS, C.RECORD):
            inputs.append(_bytes_input(name, value))
        else:
            inputs.append(_input(name, value))
    return inputs


def _decode(result) -> dict:
    """Outputs of a response (without batch dimension) and its INFO as a dict."""
    out: dict = {}
    response = result.get_response()
    for tensor in response.outputs:
        array = result.as_numpy(tensor.name)
        out[tensor.name] = array[0] if array is not None else None
    info = out.get(C.INFO)
    out["info"] = json.loads(info.reshape(-1)[0]) if info is not None else {}
    record = out.get(C.RECORD_OUT)
    out["record"] = bytes(record.reshape(-1)[0]) if record is not None else None
    return out


def _error(exc: InferenceServerException) -> BackendError:
    status = str(exc.status() or "")
    message = exc.message() or str(exc)
    if status in _RETRYABLE_STATUS:
        return BackendError(C.UNAVAILABLE, message)
    if status == "StatusCode.DEADLINE_EXCEEDED":
        return BackendError("deadline_exceeded", message)
    code, text = C.parse_error(message)
    if code == C.INTERNAL and status == "StatusCode.INVALID_ARGUMENT":
        code = C.INVALID_ARGUMENT  # refused by Triton itself (dtype, shape, missing input)
    return BackendError(code, text)


def _step_output(out: dict, frame_index: int) -> StepOutput:
    probabilities = out.get(C.PROBABILITIES)
    labels = out.get(C.LABELS)
    objects = out.get(C.OBJECTS)
    if probabilities is None or labels is None or objects is None:
        raise BackendError(C.INTERNAL, f"step {frame_index}: the response lacks outputs")
    return StepOutput(
        frame_index=int(out["info"].get("frame_index", frame_index)),
        object_ids=[int(i) for i in objects],
        probabilities=probabilities.astype(np.float32),
        labels=labels,
    )


# ---------------------------------------------------------------------- shared core


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
        if error.code != C.UNAVAILABLE or time.monotonic() + self.delay > self.deadline:
            raise error
        delay, self.delay = self.delay, min(self.delay * 2, 1.0)
        return delay


class _TritonClientCore:
    """What the sync and asyncio clients share, without I/O: sessions, the fields of every
    request, what a response changes in a session, and the recovery plan."""

    def __init__(
        self,
        url: str,
        model_name: str,
        timeout_s: float | None,
        keep_records: bool,
        recover: bool,
        retry_unavailable_s: float,
    ) -> None:
        self.url = url
        self.model_name = model_name
        self.timeout_s = timeout_s
        self.keep_records = keep_records
        self.recover = recover and keep_records
        self.retry_unavailable_s = retry_unavailable_s
        self.sessions: dict[str, _SessionState] = {}
        self.counters: Counter = Counter()
        self._lock = threading.Lock()

    def _count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self.counters[name] += amount

    def _state(self, handle: SessionHandle) -> _SessionState:
        return open_session_of(self.sessions, handle)

    def _new_session(
        self, session_id: str, processing_size: tuple[int, int], options: dict | None
    ) -> tuple[SessionHandle, _SessionState]:
        refuse_open_id(self.sessions, session_id)
        size = (int(processing_size[0]), int(processing_size[1]))
        return SessionHandle(session_id, self.url, size, epoch=0), _SessionState(
            size, dict(options or {})
        )

    def _register(self, session_id: str, state: _SessionState) -> None:
        with self._lock:
            self.sessions[session_id] = state

    def _forget(self, session_id: str) -> None:
        with self._lock:
            self.sessions.pop(session_id, None)

    def _open_options(self, state: _SessionState) -> str:
        options = dict(state.options)
        if self.keep_records:
            options[C.ATTACH_RECORD] = "skeleton"
        return json.dumps(options)

    def _open_request(self, state: _SessionState) -> _Start:
        fields = {
            C.PROCESSING_SIZE: np.asarray(state.processing_size, np.int32),
            C.OPTIONS: self._open_options(state),
        }
        return _Start(C.OPEN, fields)

    def _prime_request(
        self, state: _SessionState, record: bytes, frame_index: int | None
    ) -> _Start:
        fields = {C.RECORD: record, C.OPTIONS: self._open_options(state)}
        if frame_index is not None:
            fields[C.FRAME_INDEX] = np.asarray([frame_index], np.int64)
        return _Start(C.PRIME, fields)

    def _primed_session(
        self,
        session_id: str,
        record: bytes,
        epoch: int,
        frame_index: int | None,
        options: dict | None,
    ) -> tuple[SessionHandle, _SessionState, _Start]:
        """The handle, client state and prime request of a session restored from ``record``;
        the state's next frame is ``frame_index`` when given, else the record's."""
        try:
            header, frames = split_record(record)
        except (ValueError, KeyError, OSError) as exc:
            raise BackendError(C.INVALID_ARGUMENT, f"not a session record: {exc}") from exc
        size = (int(header["processing_size"][0]), int(header["processing_size"][1]))
        state = _SessionState(size, dict(options or header.get("options", {})))
        state.frames = dict(frames)
        state.next_index = int(header["next_frame_index"] if frame_index is None else frame_index)
        state.skeleton = _skeleton_of(record)
        handle = SessionHandle(session_id, self.url, size, epoch=epoch)
        return handle, state, self._prime_request(state, record, frame_index)

    def _recovery(self, handle: SessionHandle, state: _SessionState, resume: int) -> _Start:
        """Move ``handle`` to the next epoch and plan its start there, expecting frame
        ``resume``: a fresh open when nothing was memorised yet (exact), else a prime from
        the latest record."""
        handle.epoch += 1
        if state.skeleton is None:
            return self._open_request(state)
        record = assemble_record(state.skeleton, state.frames)
        next_index = int(record_header(state.skeleton)["next_frame_index"])
        return self._prime_request(state, record, max(resume, next_index))

    def _count_recovery(self, start: _Start) -> None:
        if start.kind == C.OPEN:
            self._count("reopens")
        else:
            self._count("primes")
            self._count("prime_bytes", len(start.fields[C.RECORD]))

    @staticmethod
    def _step_fields(frame_index: int, image: np.ndarray, masks) -> dict:
        fields = {C.FRAME_INDEX: np.asarray([frame_index], np.int64), C.IMAGE: image}
        if masks:
            labels, ids = masks_to_wire(masks, tuple(image.shape[:2]))
            fields[C.MASKS] = labels
            fields[C.OBJECT_IDS] = ids
        return fields

    def _after_step(
        self, state: _SessionState, out: dict, frame_index: int, image: np.ndarray
    ) -> StepOutput:
        output = _step_output(out, frame_index)
        info = out["info"]
        if info.get("memorised") and self.keep_records:  # replays too: a lost answer
            state.frames[output.frame_index] = (np.array(image, np.uint8), output.labels)
        self._after_change(state, out)
        if not info.get("replayed"):
            state.next_index = output.frame_index + 1
        return output

    @staticmethod
    def _after_change(state: _SessionState, out: dict) -> None:
        if out["record"] is not None:
            _keep_skeleton(state, out["record"])

    @staticmethod
    def _record_of(out: dict) -> bytes:
        if out["record"] is None:
            raise BackendError(C.INTERNAL, "the server sent no record")
        return out["record"]

    @staticmethod
    def _ignore_gone(exc: BackendError) -> None:
        """Closing a session the server no longer has (or cannot reach) is not an error."""
        if exc.code not in (C.UNKNOWN_SESSION, C.UNAVAILABLE):
            raise exc


def _skeleton_of(record: bytes) -> bytes:
    """A record's skeleton: its header and empty slot arrays."""
    header, _ = split_record(record)
    empty = {"header": np.frombuffer(json.dumps(header).encode(), np.uint8)}
    for i in range(len(header["slots"])):
        empty[f"image_{i}"] = np.zeros((0,), np.uint8)
        empty[f"labels_{i}"] = np.zeros((0,), np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **empty)
    return buffer.getvalue()


def _stats_id() -> str:
    return f"stats:{uuid.uuid4().hex}"


# ---------------------------------------------------------------------- sync backend


class TritonBackend(_TritonClientCore):
    """Backend over ``tritonclient.grpc`` (thread-safe: sessions may run on many threads)."""

    name = "triton"

    def __init__(
        self,
        url: str = "127.0.0.1:8001",
        *,
        model_name: str = C.MODEL_NAME,
        timeout_s: float | None = 120.0,
        keep_records: bool = True,
        recover: bool = True,
        retry_unavailable_s: float = 30.0,
    ) -> None:
        super().__init__(url, model_name, timeout_s, keep_records, recover, retry_unavailable_s)
        self.client = grpcclient.InferenceServerClient(url)

    # ------------------------------------------------------------------ Backend protocol

    def open(
        self, session_id: str, processing_size: tuple[int, int], options: dict | None = None
    ) -> SessionHandle:
        handle, state = self._new_session(session_id, processing_size, options)
        self._start(handle, self._open_request(state))
        self._register(session_id, state)
        return handle

    def step(
        self,
        handle: SessionHandle,
        frame_index: int,
        image: np.ndarray,
        masks: dict[int, np.ndarray] | None = None,
    ) -> StepOutput:
        state = self._state(handle)
        fields = self._step_fields(frame_index, image, masks)
        with state.lock:
            out = self._call(handle, state, C.STEP, fields, resume=frame_index)
            return self._after_step(state, out, frame_index, image)

    def remove_objects(self, handle: SessionHandle, object_ids: list[int]) -> None:
        state = self._state(handle)
        with state.lock:
            ids = np.asarray([int(i) for i in object_ids], np.int32)
            out = self._call(handle, state, C.REMOVE, {C.OBJECT_IDS: ids}, resume=state.next_index)
            self._after_change(state, out)

    def record(self, handle: SessionHandle) -> bytes:
        """The session's full record, from the server."""
        state = self._state(handle)
        with state.lock:
            out = self._call(handle, state, C.RECORD_KIND, {}, resume=state.next_index)
        return self._record_of(out)

    def close(self, handle: SessionHandle) -> None:
        self._forget(handle.session_id)
        try:
            self._infer(C.CLOSE, {}, C.correlation_id(handle.session_id, handle.epoch), end=True)
        except BackendError as exc:
            self._ignore_gone(exc)

    # ------------------------------------------------------------------ extras

    def prime(
        self,
        session_id: str,
        record: bytes,
        *,
        epoch: int = 0,
        frame_index: int | None = None,
        options: dict | None = None,
    ) -> SessionHandle:
        """A session restored on the server from ``record`` (e.g. persisted by a worker)."""
        handle, state, start = self._primed_session(session_id, record, epoch, frame_index, options)
        self._start(handle, start)
        self._register(session_id, state)
        return handle

    def cached_record(self, handle: SessionHandle) -> bytes | None:
        """The latest record assembled from what the client holds (no server round trip)."""
        state = self._state(handle)
        with state.lock:
            if state.skeleton is None:
                return None
            return assemble_record(state.skeleton, state.frames)

    def stats(self) -> dict:
        """The serving instance's statistics (sessions, bytes, evictions, batch sizes)."""
        return self._infer(C.STATS, {}, _stats_id(), start=True, end=True)["info"]

    def ready(self) -> bool:
        try:
            return bool(self.client.is_model_ready(self.model_name, client_timeout=5))
        except InferenceServerException:
            return False

    def shutdown(self) -> None:
        self.client.close()

    # ------------------------------------------------------------------ transport

    def _start(self, handle: SessionHandle, start: _Start) -> None:
        corr = C.correlation_id(handle.session_id, handle.epoch)
        try:
            self._infer(start.kind, start.fields, corr, start=True)
        except BackendError:
            self._end_quietly(corr)  # free Triton's sequence slot at once
            raise

    def _end_quietly(self, corr: str) -> None:
        try:
            self._infer(C.CLOSE, {}, corr, end=True, retry=False)
        except BackendError:
            pass

    def _call(
        self, handle: SessionHandle, state: _SessionState, kind: str, fields: dict, resume: int
    ) -> dict:
        corr = C.correlation_id(handle.session_id, handle.epoch)
        try:
            return self._infer(kind, fields, corr)
        except BackendError as exc:
            if exc.code != C.UNKNOWN_SESSION or not self.recover:
                raise
        self._end_quietly(corr)
        start = self._recovery(handle, state, resume)
        self._start(handle, start)
        self._count_recovery(start)
        self._count("resent")
        return self._infer(kind, fields, C.correlation_id(handle.session_id, handle.epoch))

    def _infer(
        self,
        kind: str,
        fields: dict,
        corr: str,
        *,
        start: bool = False,
        end: bool = False,
        retry: bool = True,
    ) -> dict:
        inputs = _build(kind, **fields)
        clock = _RetryClock(self.retry_unavailable_s if retry else 0.0)
        while True:
            self._count("requests")
            self._count(f"requests_{kind}")
            try:
                result = self.client.infer(
                    self.model_name, inputs, sequence_id=corr, sequence_start=start,
                    sequence_end=end, client_timeout=self.timeout_s,
                )  # fmt: skip
                return _decode(result)
            except InferenceServerException as exc:
                error = _error(exc)
            time.sleep(clock.next_delay(error))


# ---------------------------------------------------------------------- async backend


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


class AsyncTritonBackend(_TritonClientCore):
    """The same contract over ``tritonclient.grpc.aio``, with a pipelined frame stream.

    ``open``/``step``/``remove_objects``/``record``/``close``/``prime`` mirror
    ``TritonBackend`` (with the same recovery). ``stream`` sends frames over one gRPC stream
    without waiting for each result, up to ``window`` frames ahead, so the next frame
    travels while the server computes the previous one. Use it from one event loop.
    """

    name = "triton-aio"

    def __init__(
        self,
        url: str = "127.0.0.1:8001",
        *,
        model_name: str = C.MODEL_NAME,
        timeout_s: float | None = 120.0,
        keep_records: bool = True,
        recover: bool = True,
        retry_unavailable_s: float = 30.0,
    ) -> None:
        super().__init__(url, model_name, timeout_s, keep_records, recover, retry_unavailable_s)
        self.client = aiogrpcclient.InferenceServerClient(url)

    async def close_client(self) -> None:
        await self.client.close()

    async def __aenter__(self) -> AsyncTritonBackend:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close_client()

    # ------------------------------------------------------------------ unary calls

    async def open(
        self, session_id: str, processing_size: tuple[int, int], options: dict | None = None
    ) -> SessionHandle:
        handle, state = self._new_session(session_id, processing_size, options)
        await self._start(handle, self._open_request(state))
        self._register(session_id, state)
        return handle

    async def step(
        self,
        handle: SessionHandle,
        frame_index: int,
        image: np.ndarray,
        masks: dict[int, np.ndarray] | None = None,
    ) -> StepOutput:
        state = self._state(handle)
        fields = self._step_fields(frame_index, image, masks)
        out = await self._call(handle, state, C.STEP, fields, resume=frame_index)
        return self._after_step(state, out, frame_index, image)

    async def remove_objects(self, handle: SessionHandle, object_ids: list[int]) -> None:
        state = self._state(handle)
        ids = np.asarray([int(i) for i in object_ids], np.int32)
        out = await self._call(handle, state, C.REMOVE, {C.OBJECT_IDS: ids}, state.next_index)
        self._after_change(state, out)

    async def record(self, handle: SessionHandle) -> bytes:
        state = self._state(handle)
        return self._record_of(await self._call(handle, state, C.RECORD_KIND, {}, state.next_index))

    async def close(self, handle: SessionHandle) -> None:
        self._forget(handle.session_id)
        try:
            await self._infer(C.CLOSE, {}, C.correlation_id(handle.session_id, handle.epoch),
                              end=True)  # fmt: skip
        except BackendError as exc:
            self._ignore_gone(exc)

    async def prime(
        self,
        session_id: str,
        record: bytes,
        *,
        epoch: int = 0,
        frame_index: int | None = None,
        options: dict | None = None,
    ) -> SessionHandle:
        """A session restored on the server from ``record``."""
        handle, state, start = self._primed_session(session_id, record, epoch, frame_index, options)
        await self._start(handle, start)
        self._register(session_id, state)
        return handle

    async def stats(self) -> dict:
        return (await self._infer(C.STATS, {}, _stats_id(), start=True, end=True))["info"]

    # ------------------------------------------------------------------ streaming

    async def stream(self, handle: SessionHandle, frames, *, window: int = 2):
        """Step every ``(frame_index, image, masks)`` of the async iterable ``frames`` over
        one gRPC stream, up to ``window`` frames in flight; yields StepOutputs in order.

        A failed frame (the session was lost, the stream broke) is re-sent as a unary step
        with the usual recovery; streaming resumes once the frames in flight are drained.
        """
        state = self._state(handle)
        source = frames.__aiter__()
        inflight: deque[tuple[int, np.ndarray, dict | None]] = deque()
        stream = None
        exhausted = False
        draining = False
        try:
            while True:
                while not (exhausted or draining) and len(inflight) < window:
                    try:
                        frame = await source.__anext__()
                    except StopAsyncIteration:
                        exhausted = True
                        break
                    if stream is None:
                        stream = _Stream(self.client)
                    inflight.append(frame)
                    stream.send({
                        "model_name": self.model_name,
                        "inputs": _build(C.STEP, **self._step_fields(*frame)),
                        "sequence_id": C.correlation_id(handle.session_id, handle.epoch),
                    })  # fmt: skip
                    self._count("requests")
                if not inflight:
                    break
                frame_index, image, masks = inflight.popleft()
                result = error = None
                try:
                    result, error = await stream.receive()
                except Exception as exc:  # noqa: BLE001 - the stream broke: go unary
                    error = exc
                    stream.close()
                    stream = None
                if error is None:
                    yield self._after_step(state, _decode(result), frame_index, image)
                    continue
                draining = True
                self._count("stream_fallbacks")
                yield await self.step(handle, frame_index, image, masks)
                if not inflight:
                    draining = False
        finally:
            if stream is not None:
                stream.close()

    # ------------------------------------------------------------------ transport

    async def _start(self, handle: SessionHandle, start: _Start) -> None:
        corr = C.correlation_id(handle.session_id, handle.epoch)
        try:
            await self._infer(start.kind, start.fields, corr, start=True)
        except BackendError:
            await self._end_quietly(corr)
            raise

    async def _end_quietly(self, corr: str) -> None:
        try:
            await self._infer(C.CLOSE, {}, corr, end=True, retry=False)
        except BackendError:
            pass

    async def _call(
        self, handle: SessionHandle, state: _SessionState, kind: str, fields: dict, resume: int
    ) -> dict:
        corr = C.correlation_id(handle.session_id, handle.epoch)
        try:
            return await self._infer(kind, fields, corr)
        except BackendError as exc:
            if exc.code != C.UNKNOWN_SESSION or not self.recover:
                raise
        await self._end_quietly(corr)
        start = self._recovery(handle, state, resume)
        await self._start(handle, start)
        self._count_recovery(start)
        self._count("resent")
        return await self._infer(kind, fields, C.correlation_id(handle.session_id, handle.epoch))

    async def _infer(
        self,
        kind: str,
        fields: dict,
        corr: str,
        *,
        start: bool = False,
        end: bool = False,
        retry: bool = True,
    ) -> dict:
        inputs = _build(kind, **fields)
        clock = _RetryClock(self.retry_unavailable_s if retry else 0.0)
        while True:
            self._count("requests")
            self._count(f"requests_{kind}")
            try:
                result = await self.client.infer(
                    self.model_name, inputs, sequence_id=corr, sequence_start=start,
                    sequence_end=end, client_timeout=self.timeout_s,
                )  # fmt: skip
                return _decode(result)
            except InferenceServerException as exc:
                error = _error(exc)
            await asyncio.sleep(clock.next_delay(error))
