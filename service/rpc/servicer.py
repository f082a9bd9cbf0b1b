"""The ``isvos.v1.Segmentation`` servicer: thin methods over ``TrackSession`` and the stream
store. Errors end calls with the gRPC status of the error table and the code in the
trailing metadata ``isvos-error-code``."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import grpc

from isvos.errors import ERRORS, IsvosError
from service.auth import authenticate
from service.backends.base import Backend, watch_placements
from service.logs import log_event
from service.redis_server import REDIS_DOWN
from service.rpc.gen import segmentation_pb2 as pb
from service.rpc.gen import segmentation_pb2_grpc as pb_grpc
from service.rpc.session import TrackSession
from service.rpc.store import StreamStore
from service.settings import Settings

log = logging.getLogger("isvos.grpc")
ERROR_CODE_KEY = "isvos-error-code"


async def abort(context: grpc.aio.ServicerContext, code: str, message: str) -> None:
    row = ERRORS.get(code) or ERRORS["internal"]
    context.set_trailing_metadata(((ERROR_CODE_KEY, row.code),))
    await context.abort(grpc.StatusCode[row.grpc_status], message)


def _authorization(context) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value
    return None


class SegmentationServicer(pb_grpc.SegmentationServicer):
    def __init__(self, settings: Settings, backend: Backend, store: StreamStore) -> None:
        self.settings = settings
        self.backend = backend
        self.store = store
        self.streams_per_key: Counter = Counter()
        self.live: dict[str, asyncio.Task] = {}
        watch_placements(backend, self._record_endpoint, log)

    async def _record_endpoint(self, session_id: str, endpoint: str) -> None:
        log_event(log, "session_placed", trace_id=session_id, endpoint=endpoint)
        await self.store.set_endpoint(session_id, endpoint)

    async def Track(self, request_iterator, context):  # noqa: N802 - the RPC's name
        try:
            owner = authenticate(self.settings.auth, _authorization(context))
        except IsvosError as exc:
            return await abort(context, exc.code, exc.message)
        limits = self.settings.grpc
        if sum(self.streams_per_key.values()) >= limits.max_streams:
            message = f"this server runs {limits.max_streams} streams, its limit"
            return await abort(context, "resource_exhausted", message)
        if self.streams_per_key[owner] >= limits.max_streams_per_key:
            message = f"this key runs {limits.max_streams_per_key} streams, its limit"
            return await abort(context, "rate_limited", message)
        self.streams_per_key[owner] += 1
        session = TrackSession(self.settings, self.backend, self.store, owner, context, self.live)
        task = asyncio.current_task()
        try:
            await session.run()
        except IsvosError as exc:
            log_event(log, "stream_refused", trace_id=session.session_id or None, code=exc.code,
                      message=exc.message)  # fmt: skip
            await abort(context, exc.code, exc.message)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except REDIS_DOWN as exc:  # the client resumes with its token once Redis is back
            log_event(log, "stream_store_unavailable", logging.WARNING,
                      trace_id=session.session_id or None, error=type(exc).__name__)  # fmt: skip
            await abort(context, "unavailable", "the session store (Redis) cannot be reached; "
                        "resume with the token")  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - a bug: the call ends, the server goes on
            log.exception("stream %s failed", session.session_id)
            await abort(context, "internal", f"{type(exc).__name__}: the server failed")
        finally:
            self.streams_per_key[owner] -= 1
            if session.session_id and self.live.get(session.session_id) is task:
                del self.live[session.session_id]

    async def GetSession(self, request, context):  # noqa: N802
        meta = await self._owned(request.session_id, context)
        if meta.get("closed"):  # only its closing answer is kept, for a lost Closed
            await abort(context, "not_found", f"session {request.session_id} was closed")
        last = int(meta.get("record_client_index", -1)) if meta else -1
        return pb.GetSessionResponse(
            session_id=request.session_id, live=request.session_id in self.live,
            last_index=last,
        )  # fmt: skip

    async def CloseSession(self, request, context):  # noqa: N802
        await self._owned(request.session_id, context)
        task = self.live.pop(request.session_id, None)
        if task is not None:
            task.cancel()
        try:
            await self.store.delete(request.session_id)
        except REDIS_DOWN:
            await abort(context, "unavailable", "the session store (Redis) cannot be reached")
        return pb.CloseSessionResponse(closed=True)

    async def _owned(self, session_id: str, context) -> dict:
        try:
            owner = authenticate(self.settings.auth, _authorization(context))
        except IsvosError as exc:
            await abort(context, exc.code, exc.message)
        try:
            meta = await self.store.meta(session_id) if len(session_id) == 32 else None
        except REDIS_DOWN:
            await abort(context, "unavailable", "the session store (Redis) cannot be reached")
        if meta is None or meta.get("owner") != owner:
            await abort(context, "not_found", f"no session {session_id[:64]!r}")
        return meta
