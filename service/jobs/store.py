"""Jobs in Redis: the job hash, the hand-out stream, events, per-key sets (DESIGN 7, 12).

Every write a worker makes checks the job's fencing epoch atomically (Lua): a worker that
stalled past its lease and woke up after another worker claimed the job cannot change its
progress, status or record. Gateways create, cancel and delete jobs; workers claim, report,
renew and finish them. Torch-free; redis-py's asyncio client.
"""

from __future__ import annotations

import json
import math
import time
import uuid

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from service.keys import WORKER_GROUP, Keys
from service.settings import JobSettings

# KEYS: job, owner_jobs, owner_queued, owner_active, idem ("" = none), queue, events, stats
# ARGV: job id, fields (JSON object), max queued, max active, ttl, events max, created,
#       job key prefix (an idempotency key naming a job that is gone is replaced)
_CREATE = """
if KEYS[5] ~= '' then
  local existing = redis.call('GET', KEYS[5])
  if existing and redis.call('EXISTS', ARGV[8] .. existing) == 1 then
    return {'existing', existing}
  end
end
if redis.call('SCARD', KEYS[3]) >= tonumber(ARGV[3]) then return {'limit', 'queued'} end
if redis.call('SCARD', KEYS[4]) >= tonumber(ARGV[4]) then return {'limit', 'active'} end
local fields = cjson.decode(ARGV[2])
for k, v in pairs(fields) do redis.call('HSET', KEYS[1], k, v) end
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[7], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('EXPIRE', KEYS[3], ARGV[5])
redis.call('SADD', KEYS[4], ARGV[1])
redis.call('EXPIRE', KEYS[4], ARGV[5])
if KEYS[5] ~= '' then redis.call('SET', KEYS[5], ARGV[1], 'EX', ARGV[5]) end
redis.call('XADD', KEYS[7], 'MAXLEN', '~', ARGV[6], '*', 'type', 'status', 'status', 'queued')
redis.call('EXPIRE', KEYS[7], ARGV[5])
redis.call('XADD', KEYS[6], '*', 'job', ARGV[1])
redis.call('HINCRBY', KEYS[8], 'jobs_created', 1)
return {'created', ARGV[1]}
"""

# KEYS: job, owner_queued, events; ARGV: worker, now, max attempts, ttl, events max
# Returns the new fence, 0 when the job is gone or over, -1 when it ran out of attempts.
_CLAIM = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status or (status ~= 'queued' and status ~= 'running') then return 0 end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
local fence = redis.call('HINCRBY', KEYS[1], 'fence', 1)
if attempts > tonumber(ARGV[3]) then return -1 end
redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[1], 'updated_at', ARGV[2])
if not redis.call('HGET', KEYS[1], 'started_at') then
  redis.call('HSET', KEYS[1], 'started_at', ARGV[2])
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('SREM', KEYS[2], redis.call('HGET', KEYS[1], 'id'))
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'type', 'status', 'status', 'running',
           'attempt', tostring(attempts))
return fence
"""

# KEYS: job, events; ARGV: fence, fields (JSON), event (JSON or ""), events max, steps delta
_REPORT = """
if redis.call('HGET', KEYS[1], 'fence') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
local fields = cjson.decode(ARGV[2])
for k, v in pairs(fields) do redis.call('HSET', KEYS[1], k, v) end
if tonumber(ARGV[5]) ~= 0 then redis.call('HINCRBY', KEYS[1], 'steps', ARGV[5]) end
if ARGV[3] ~= '' then
  local event = cjson.decode(ARGV[3])
  local flat = {}
  for k, v in pairs(event) do table.insert(flat, k); table.insert(flat, v) end
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', unpack(flat))
end
return 1
"""

# KEYS: job, record, record history; ARGV: fence, header, ttl, next frame index ("" = none)
_RECORD = """
if redis.call('HGET', KEYS[1], 'fence') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[3], ARGV[4], ARGV[2])
  redis.call('EXPIRE', KEYS[3], ARGV[3])
end
return 1
"""

# KEYS: job, owner_queued, owner_active, events, record, record history, queue, expiry, stats
# ARGV: frame, revision (JSON object), now, ttl, events max, max queued, max active
# A succeeded job goes back to the queue: the record becomes the history's nearest one at or
# before the frame (none: the run starts over), later history entries go (the revision
# rewrites them), the events start afresh. Returns {outcome, revision number, record frame}.
_REVISE = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing', 0, -1} end
if status ~= 'succeeded' then return {'status', 0, -1, status} end
if redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[6]) then return {'limit', 0, -1} end
if redis.call('SCARD', KEYS[3]) >= tonumber(ARGV[7]) then return {'limit', 0, -1} end
local frame = tonumber(ARGV[1])
local best = -1
for _, field in ipairs(redis.call('HKEYS', KEYS[6])) do
  local next_index = tonumber(field)
  if next_index > frame then
    redis.call('HDEL', KEYS[6], field)
  elseif next_index > best then
    best = next_index
  end
end
if best >= 0 then
  redis.call('SET', KEYS[5], redis.call('HGET', KEYS[6], tostring(best)), 'EX', ARGV[4])
else
  redis.call('DEL', KEYS[5])
end
local id = redis.call('HGET', KEYS[1], 'id')
local number = redis.call('HINCRBY', KEYS[1], 'revision', 1)
local revision = cjson.decode(ARGV[2])
revision['number'] = number
revision['record_frame'] = best
revision['steps_before'] = tonumber(redis.call('HGET', KEYS[1], 'steps') or '0')
local revisions = cjson.decode(redis.call('HGET', KEYS[1], 'revisions') or '[]')
table.insert(revisions, revision)
redis.call('HSET', KEYS[1], 'revisions', cjson.encode(revisions), 'status', 'queued',
           'resume_at', ARGV[1], 'outputs_ready', '[]', 'attempts', '0', 'updated_at', ARGV[3])
redis.call('HDEL', KEYS[1], 'finished_at', 'error_code', 'error_message', 'last_frame_at',
           'first_frame_at', 'fps')
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[6], ARGV[4])
redis.call('SADD', KEYS[2], id)
redis.call('SADD', KEYS[3], id)
redis.call('ZREM', KEYS[8], id)
redis.call('DEL', KEYS[4])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*', 'type', 'revision',
           'revision', tostring(number), 'frame', ARGV[1])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*', 'type', 'status', 'status', 'queued')
redis.call('EXPIRE', KEYS[4], ARGV[4])
redis.call('XADD', KEYS[7], '*', 'job', id)
redis.call('HINCRBY', KEYS[9], 'revisions_created', 1)
return {'revised', number, best}
"""

# KEYS: job, owner_queued, owner_active, events, record, expiry, stats, record history
# ARGV: fence ("" = any: cancel), status, error code, error message, now, retention,
#       events max, outputs (JSON list), grace (the keys outlive the expiry score by it, so
#       the sweeper still finds the owner when it removes the job)
_FINISH = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 0 end
if ARGV[1] ~= '' and redis.call('HGET', KEYS[1], 'fence') ~= ARGV[1] then return 0 end
if status == 'succeeded' or status == 'failed' or status == 'cancelled' then return 0 end
local id = redis.call('HGET', KEYS[1], 'id')
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'finished_at', ARGV[5], 'updated_at', ARGV[5],
           'outputs_ready', ARGV[8])
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'error_code', ARGV[3], 'error_message', ARGV[4])
end
if ARGV[1] == '' then redis.call('HINCRBY', KEYS[1], 'fence', 1) end
redis.call('SREM', KEYS[2], id)
redis.call('SREM', KEYS[3], id)
redis.call('DEL', KEYS[5])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[7], '*', 'type', 'status', 'status', ARGV[2],
           'error_code', ARGV[3], 'error_message', ARGV[4])
local keep = tonumber(ARGV[6]) + tonumber(ARGV[9])
redis.call('EXPIRE', KEYS[1], keep)
redis.call('EXPIRE', KEYS[4], keep)
redis.call('EXPIRE', KEYS[8], keep)
local idem = redis.call('HGET', KEYS[1], 'idempotency_redis_key')
if idem and idem ~= '' then redis.call('EXPIRE', idem, keep) end
redis.call('ZADD', KEYS[6], tonumber(ARGV[5]) + tonumber(ARGV[6]), id)
redis.call('HINCRBY', KEYS[7], 'jobs_' .. ARGV[2], 1)
return 1
"""

# A finished job's keys outlive its expiry time by this much, for the sweeper to find.
SWEEP_GRACE_S = 3600
# KEYS: job, queue; ARGV: fence, group, consumer, entry id
_RENEW = """
if redis.call('HGET', KEYS[1], 'fence') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
redis.call('XCLAIM', KEYS[2], ARGV[2], ARGV[3], 0, ARGV[4], 'JUSTID')
return 1
"""

# Keys of a job that is neither finished nor expired live this long at most (a safety net
# for a deployment that stops for good while jobs wait).
ACTIVE_TTL_S = 7 * 86_400


class CreateOutcome:
    def __init__(self, kind: str, value: str) -> None:
        self.kind = kind  # "created" | "existing" | "limit"
        self.value = value  # job id, or which limit ("queued" | "active")


class JobStore:
    def __init__(self, redis: aioredis.Redis, keys: Keys, settings: JobSettings) -> None:
        self.redis = redis
        self.keys = keys
        self.settings = settings
        self._create = redis.register_script(_CREATE)
        self._claim = redis.register_script(_CLAIM)
        self._report = redis.register_script(_REPORT)
        self._record = redis.register_script(_RECORD)
        self._finish = redis.register_script(_FINISH)
        self._renew = redis.register_script(_RENEW)
        self._revise = redis.register_script(_REVISE)

    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex  # 122 random bits: not guessable

    def _ttl(self) -> int:
        return max(ACTIVE_TTL_S, self.settings.retention_s)

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.keys.queue, WORKER_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    # ------------------------------------------------------------------ gateway

    async def create(
        self,
        job_id: str,
        owner: str,
        fields: dict[str, str],
        *,
        idempotency_key: str | None,
        max_queued: int,
        max_active: int,
    ) -> CreateOutcome:
        k = self.keys
        idem = k.idempotency(owner, idempotency_key) if idempotency_key else ""
        now = time.time()
        data = {"id": job_id, "owner": owner, "status": "queued", "created_at": repr(now),
                "updated_at": repr(now), "fence": "0", "attempts": "0", "steps": "0",
                "frames_done": "0", "idempotency_redis_key": idem, **fields}  # fmt: skip
        kind, value = await self._create(
            keys=[k.job(job_id), k.owner_jobs(owner), k.owner_queued(owner),
                  k.owner_active(owner), idem, k.queue, k.events(job_id), k.stats],
            args=[job_id, json.dumps(data), max_queued, max_active, self._ttl(),
                  self.settings.events_max, repr(now), k.job("")],
        )  # fmt: skip
        return CreateOutcome(_text(kind), _text(value))

    async def get(self, job_id: str) -> dict[str, str] | None:
        data = await self.redis.hgetall(self.keys.job(job_id))
        return {_text(k): _text(v) for k, v in data.items()} or None

    async def list(
        self, owner: str, *, status: str | None, cursor: float | None, limit: int
    ) -> tuple[list[dict[str, str]], float | None]:
        """The owner's jobs, newest first, ``limit`` per page; the next page's cursor."""
        upper = f"({cursor!r}" if cursor is not None and math.isfinite(cursor) else "+inf"
        found: list[dict[str, str]] = []
        next_cursor = None
        while len(found) < limit:
            batch = await self.redis.zrevrangebyscore(
                self.keys.owner_jobs(owner), upper, "-inf", start=0, num=limit * 2,
                withscores=True,
            )  # fmt: skip
            if not batch:
                break
            for member, score in batch:
                upper = f"({score!r}"
                job = await self.get(_text(member))
                if job is None or (status and job["status"] != status):
                    continue
                found.append(job)
                if len(found) == limit:
                    next_cursor = score
                    break
        return found, next_cursor

    async def cancel(self, job_id: str, message: str = "cancelled by its owner") -> bool:
        """Cancel a job that is not finished (fences its worker out at once)."""
        return await self.finish(job_id, None, "cancelled", "cancelled", message)

    async def delete(self, job_id: str) -> None:
        """Remove the job's keys (its files are the caller's)."""
        job = await self.get(job_id)
        k = self.keys
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(k.job(job_id), k.events(job_id), k.record(job_id), k.record_history(job_id))
        pipe.zrem(k.expiry, job_id)
        if job is not None:
            owner = job["owner"]
            pipe.zrem(k.owner_jobs(owner), job_id)
            pipe.srem(k.owner_queued(owner), job_id)
            pipe.srem(k.owner_active(owner), job_id)
            if job.get("idempotency_redis_key"):
                pipe.delete(job["idempotency_redis_key"])
        await pipe.execute()

    async def revise(
        self, job_id: str, frame: int, revision: dict, *, max_queued: int, max_active: int
    ) -> tuple[str, int, int | None, str]:
        """Queue a revision of a succeeded job from ``frame`` (``_REVISE``): (outcome, its
        number, the next frame of the record it resumes from or None, the job's status)."""
        job = await self.get(job_id)
        if job is None:
            return "missing", 0, None, ""
        k, owner = self.keys, job["owner"]
        reply = await self._revise(
            keys=[k.job(job_id), k.owner_queued(owner), k.owner_active(owner),
                  k.events(job_id), k.record(job_id), k.record_history(job_id), k.queue,
                  k.expiry, k.stats],
            args=[frame, json.dumps(revision), repr(time.time()), self._ttl(),
                  self.settings.events_max, max_queued, max_active],
        )  # fmt: skip
        outcome, number, best = _text(reply[0]), int(reply[1]), int(reply[2])
        status = _text(reply[3]) if len(reply) > 3 else ""
        return outcome, number, (None if best < 0 else best), status

    async def count_owner(self, owner: str) -> tuple[int, int]:
        """(queued, active) jobs of ``owner``."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.scard(self.keys.owner_queued(owner))
        pipe.scard(self.keys.owner_active(owner))
        queued, active = await pipe.execute()
        return int(queued), int(active)

    async def events(self, job_id: str, after: str, block_ms: int) -> list[tuple[str, dict]]:
        """Events after the stream id ``after`` ("0" for all), waiting up to ``block_ms``."""
        reply = await self.redis.xread({self.keys.events(job_id): after}, block=block_ms, count=100)
        out = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                out.append((_text(entry_id), {_text(k): _text(v) for k, v in fields.items()}))
        return out

    # ------------------------------------------------------------------ workers

    async def read_queue(self, consumer: str, count: int, block_ms: int) -> list[tuple[str, str]]:
        """New entries for this worker: [(entry id, job id)]."""
        reply = await self.redis.xreadgroup(
            WORKER_GROUP, consumer, {self.keys.queue: ">"}, count=count, block=block_ms
        )
        return [
            (_text(entry_id), _text(fields.get(b"job", fields.get("job", b""))))
            for _stream, entries in reply or [] for entry_id, fields in entries
        ]  # fmt: skip

    async def reclaim(
        self, consumer: str, min_idle_ms: int, count: int, cursor: str = "0-0"
    ) -> tuple[list[tuple[str, str]], str]:
        """Entries whose worker stopped renewing them for ``min_idle_ms`` (XAUTOCLAIM), and
        the cursor to continue from (Redis scans a bounded part of the pending list)."""
        reply = await self.redis.xautoclaim(
            self.keys.queue, WORKER_GROUP, consumer, min_idle_ms, cursor, count=count
        )
        entries = [
            (_text(entry_id), _text(fields.get(b"job", fields.get("job", b""))))
            for entry_id, fields in reply[1] if fields
        ]  # fmt: skip
        return entries, _text(reply[0])

    async def renew(self, job_id: str, fence: int, consumer: str, entry_id: str) -> bool:
        """Reset the idle time of the job's entry (the lease) if this worker still holds the
        job (checked in the same script: a stale worker cannot take the entry back)."""
        done = await self._renew(
            keys=[self.keys.job(job_id), self.keys.queue],
            args=[str(fence), WORKER_GROUP, consumer, entry_id],
        )
        return bool(done)

    async def ack(self, entry_id: str) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.xack(self.keys.queue, WORKER_GROUP, entry_id)
        pipe.xdel(self.keys.queue, entry_id)
        await pipe.execute()

    async def claim(self, job_id: str, worker: str) -> int:
        """The job's new fence (> 0), 0 when it is gone or over, -1 when out of attempts."""
        job = await self.get(job_id)
        if job is None:
            return 0
        return int(
            await self._claim(
                keys=[
                    self.keys.job(job_id),
                    self.keys.owner_queued(job["owner"]),
                    self.keys.events(job_id),
                ],
                args=[
                    worker,
                    repr(time.time()),
                    self.settings.max_attempts,
                    self._ttl(),
                    self.settings.events_max,
                ],
            )  # fmt: skip
        )

    async def report(
        self,
        job_id: str,
        fence: int,
        fields: dict[str, str],
        event: dict[str, str] | None = None,
        steps: int = 0,
    ) -> bool:
        """Progress of a fenced worker; False when it no longer holds the job."""
        done = await self._report(
            keys=[self.keys.job(job_id), self.keys.events(job_id)],
            args=[str(fence), json.dumps(fields), json.dumps(event) if event else "",
                  self.settings.events_max, steps],
        )  # fmt: skip
        return bool(done)

    async def put_record_header(
        self, job_id: str, fence: int, header: bytes, next_frame_index: int | None = None
    ) -> bool:
        """The current record header, and its entry in the history (by its next frame)."""
        k = self.keys
        done = await self._record(
            keys=[k.job(job_id), k.record(job_id), k.record_history(job_id)],
            args=[str(fence), header, self._ttl(),
                  "" if next_frame_index is None else str(next_frame_index)],
        )  # fmt: skip
        return bool(done)

    async def record_header(self, job_id: str) -> bytes | None:
        return await self.redis.get(self.keys.record(job_id))

    async def holds(self, job_id: str, fence: int) -> bool:
        values = await self.redis.hmget(self.keys.job(job_id), ["fence", "status"])
        return (
            values[0] is not None
            and _text(values[0]) == str(fence)
            and (_text(values[1]) == "running")
        )

    async def finish(
        self,
        job_id: str,
        fence: int | None,
        status: str,
        error_code: str = "",
        message: str = "",
        outputs: list[str] | None = None,
    ) -> bool:
        """Move the job to a final status (fenced unless ``fence`` is None: a cancel)."""
        job = await self.get(job_id)
        if job is None:
            return False
        k = self.keys
        owner = job["owner"]
        done = await self._finish(
            keys=[k.job(job_id), k.owner_queued(owner), k.owner_active(owner),
                  k.events(job_id), k.record(job_id), k.expiry, k.stats,
                  k.record_history(job_id)],
            args=["" if fence is None else str(fence), status, error_code, message,
                  repr(time.time()), self.settings.retention_s, self.settings.events_max,
                  json.dumps(outputs or []), SWEEP_GRACE_S],
        )  # fmt: skip
        return bool(done)

    async def expired(self, now: float, count: int = 100) -> list[str]:
        """Finished jobs whose retention ran out (their files are to be removed)."""
        ids = await self.redis.zrangebyscore(self.keys.expiry, "-inf", now, start=0, num=count)
        return [_text(i) for i in ids]

    async def forget_expired(self, job_id: str) -> None:
        await self.redis.zrem(self.keys.expiry, job_id)

    # ------------------------------------------------------------------ statistics

    async def count_frames(self, frames: int, latencies_s: list[float]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(self.keys.stats, "frames", frames)
        for latency in latencies_s:
            pipe.hincrby(self.keys.latency, _bucket(latency), 1)
            pipe.hincrbyfloat(self.keys.latency, "sum", latency)
        await pipe.execute()


LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _bucket(seconds: float) -> str:
    for bound in LATENCY_BUCKETS:
        if seconds <= bound:
            return repr(bound)
    return "+Inf"


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
