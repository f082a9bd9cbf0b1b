"""A Track stream's resumable state: a meta hash and the session record header in Redis, the
record's slots in the blob store, and the latest results (so a client that lost some in a
broken connection gets them again). Every write checks the stream's epoch (a resumed stream
bumps it), so an old server task that outlives its connection cannot overwrite the new one.
Everything expires ``resume_ttl_s`` after the last write. A stream its client closed keeps
only its meta (marked closed) and its last results, for ``CLOSED_KEEP_S``: a client whose
connection broke before the ``Closed`` answer reached it resumes, gets what it missed and
``Closed`` again. Torch-free."""

from __future__ import annotations

import asyncio
import json

import redis.asyncio as aioredis

from isvos.errors import IsvosError
from isvos.limits import DEFAULT_SESSION_LIMITS
from isvos.record import SessionRecord
from service.blobs import LocalBlobStore
from service.keys import Keys
from service.records import RecordStore

CLOSED_KEEP_S = 60  # how long a closed stream answers a resume (a client's reconnect time)

# KEYS: meta, record header, results; ARGV: epoch, header ("" = keep), meta fields (JSON),
#       results (a JSON list of "<client index>:<base64 FrameResult>"), ttl, results kept
_SAVE = """
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return 0 end
if ARGV[2] ~= '' then redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[5]) end
local fields = cjson.decode(ARGV[3])
for k, v in pairs(fields) do redis.call('HSET', KEYS[1], k, v) end
local results = cjson.decode(ARGV[4])
for _, r in ipairs(results) do redis.call('RPUSH', KEYS[3], r) end
redis.call('LTRIM', KEYS[3], -tonumber(ARGV[6]), -1)
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[3], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[5])
return 1
"""


class StreamStore:
    def __init__(
        self, redis: aioredis.Redis, keys: Keys, blobs: LocalBlobStore, ttl_s: int, results: int
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.blobs = blobs
        self.ttl_s = ttl_s
        self.results = results
        self._save = redis.register_script(_SAVE)

    async def create(self, session_id: str, fields: dict[str, str]) -> None:
        key = self.keys.stream(session_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, mapping={**fields, "epoch": "1"})
        pipe.expire(key, self.ttl_s)
        await pipe.execute()

    async def meta(self, session_id: str) -> dict[str, str] | None:
        data = await self.redis.hgetall(self.keys.stream(session_id))
        return {_t(k): _t(v) for k, v in data.items()} or None

    async def set_endpoint(self, session_id: str, endpoint: str) -> None:
        """Where the stream's session lives now (kept only while the stream's entry is)."""
        key = self.keys.stream(session_id)
        if await self.redis.exists(key):
            await self.redis.hset(key, "endpoint", endpoint)

    async def next_epoch(self, session_id: str) -> int:
        """Take the stream over: its epoch + 1 (older holders' writes are refused from now)."""
        key = self.keys.stream(session_id)
        epoch = await self.redis.hincrby(key, "epoch", 1)
        await self.redis.expire(key, self.ttl_s)
        return int(epoch)

    async def save(
        self, session_id: str, epoch: int, header: bytes | None, fields: dict[str, str],
        results: list[str],
    ) -> bool:  # fmt: skip
        k = self.keys
        done = await self._save(
            keys=[k.stream(session_id), k.stream_record(session_id), k.stream_results(session_id)],
            args=[str(epoch), header or b"", json.dumps(fields), json.dumps(results),
                  self.ttl_s, self.results],
        )  # fmt: skip
        return bool(done)

    async def holds(self, session_id: str, epoch: int) -> bool:
        value = await self.redis.hget(self.keys.stream(session_id), "epoch")
        return value is not None and int(value) == epoch

    async def results_after(self, session_id: str, index: int) -> list[str]:
        """Cached results (serialised) of frames after client index ``index``."""
        items = await self.redis.lrange(self.keys.stream_results(session_id), 0, -1)
        out = []
        for item in items:
            text = _t(item)
            if int(text.split(":", 1)[0]) > index:
                out.append(text)
        return out

    async def load_record(self, session_id: str) -> SessionRecord | None:
        header = await self.redis.get(self.keys.stream_record(session_id))
        if header is None:
            return None
        return await _StreamRecord(self, session_id, 0).load(DEFAULT_SESSION_LIMITS, header)

    def records(self, session_id: str, epoch: int, on_save) -> _StreamRecord:
        """The ``RecordSink`` of a stream's run; ``on_save(header)`` gives the fields and
        results to write with each header."""
        return _StreamRecord(self, session_id, epoch, on_save)

    async def close(self, session_id: str, epoch: int, fields: dict[str, str],
                    results: list[str]) -> None:  # fmt: skip
        """The client closed the stream: its last results and ``fields`` (the closing
        figures) saved, the record dropped, the rest kept ``CLOSED_KEEP_S``."""
        if not await self.save(session_id, epoch, None, {**fields, "closed": "1"}, results):
            return  # taken over by a resume: the stream's data is the new holder's
        await self.redis.delete(self.keys.stream_record(session_id))
        await self.keep_closed(session_id)
        await asyncio.to_thread(self.blobs.delete_prefix, f"streams/{session_id}")

    async def keep_closed(self, session_id: str) -> None:
        """A closed stream's meta and results expire together, ``CLOSED_KEEP_S`` from now."""
        k = self.keys
        pipe = self.redis.pipeline(transaction=True)
        pipe.expire(k.stream(session_id), min(self.ttl_s, CLOSED_KEEP_S))
        pipe.expire(k.stream_results(session_id), min(self.ttl_s, CLOSED_KEEP_S))
        await pipe.execute()

    async def delete(self, session_id: str) -> None:
        k = self.keys
        await self.redis.delete(k.stream(session_id), k.stream_record(session_id),
                                k.stream_results(session_id))  # fmt: skip
        await asyncio.to_thread(self.blobs.delete_prefix, f"streams/{session_id}")


class _StreamRecord(RecordStore):
    def __init__(self, store: StreamStore, session_id: str, epoch: int, on_save=None) -> None:
        self.store = store
        self.session_id = session_id
        self.epoch = epoch
        self.on_save = on_save
        self.prefix = f"streams/{session_id}/record"

    async def load(self, limits, header: bytes | None = None):  # type: ignore[override]
        if header is None:
            return await super().load(limits)
        self._header = header
        return await super().load(limits)

    async def _fenced(self) -> None:
        if not await self.store.holds(self.session_id, self.epoch):
            raise IsvosError("stale_epoch", f"stream {self.session_id} was taken over")

    async def put_header(self, data: bytes, next_frame_index: int | None = None) -> None:
        fields, results = self.on_save(data) if self.on_save else ({}, [])
        if not await self.store.save(self.session_id, self.epoch, data, fields, results):
            raise IsvosError("stale_epoch", f"stream {self.session_id} was taken over")

    async def get_header(self) -> bytes | None:
        header = getattr(self, "_header", None)
        if header is not None:
            return header
        return await self.store.redis.get(self.store.keys.stream_record(self.session_id))

    async def put_slot(self, index: int, data: bytes) -> None:
        await self._fenced()
        await asyncio.to_thread(self.store.blobs.put, f"{self.prefix}/slot-{index}.bin", data)

    async def get_slot(self, index: int) -> bytes | None:
        return await asyncio.to_thread(self.store.blobs.get, f"{self.prefix}/slot-{index}.bin")

    async def delete_slot(self, index: int) -> None:
        await self._fenced()
        await asyncio.to_thread(self.store.blobs.delete, f"{self.prefix}/slot-{index}.bin")

    async def slot_indices(self) -> list[int]:
        keys = await asyncio.to_thread(self.store.blobs.list, self.prefix)
        return [int(k.rsplit("slot-", 1)[1].split(".")[0]) for k in keys]


def _t(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
