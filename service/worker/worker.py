"""The worker: takes jobs from the Redis stream and runs them (DESIGN decision 12).

Jobs are handed out at least once and take effect at most once:

- new entries come with XREADGROUP; entries whose worker stopped renewing them for the
  lease time are taken over with XAUTOCLAIM;
- claiming a job bumps its fencing epoch (``JobStore.claim``); the holder renews its entry
  (XCLAIM of its own entry) every ``lease_s / 3`` and checks it still holds the job; every
  write it makes is checked against the epoch, so a stalled worker that wakes up cannot
  write after another worker took the job over;
- the job's session uses the epoch as its session epoch, so a re-prime of the same job on a
  shared inference server fences the old session too;
- the entry is acknowledged when the job is finished (or gone), never by a worker that lost
  it.

With the Triton backend a worker runs many jobs at once (``backend.concurrency``) so that
sessions of different jobs batch on the server; with the local backend the engine thread
batches them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid

import redis.asyncio as aioredis

from isvos.errors import IsvosError
from service.backends.base import Backend, watch_placements
from service.blobs import LocalBlobStore
from service.jobs.store import JobStore
from service.keys import Keys
from service.logs import log_event
from service.proposals import serve_proposals
from service.redis_server import REDIS_DOWN
from service.runner import CancelToken
from service.settings import Settings
from service.worker.job import Fenced, JobContext, run_job, segment_request

log = logging.getLogger("isvos.worker")
HEARTBEAT_TTL_S = 15


class Worker:
    def __init__(self, settings: Settings, backend: Backend, *, name: str | None = None) -> None:
        self.settings = settings
        self.backend = backend
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.keys = Keys(settings.redis.key_prefix)
        self.blobs = LocalBlobStore(settings.storage.data_dir / "blobs")
        self.redis: aioredis.Redis | None = None
        self.store: JobStore | None = None
        self.tasks: set[asyncio.Task] = set()
        self.tokens: dict[tuple[str, int], CancelToken] = {}
        self.contexts: dict[str, JobContext] = {}
        watch_placements(backend, self._record_endpoint, log)
        self.jobs_done = 0
        self._reclaim_cursor = "0-0"

    async def run(self, stop: asyncio.Event) -> None:
        """Take and run jobs until ``stop`` is set; then stop the jobs in hand (their
        leases expire and other workers resume them from their records)."""
        # Timeouts: a hung connection must not block a job's writes for ever.
        self.redis = aioredis.from_url(self.settings.redis.url, socket_timeout=30,
                                       socket_connect_timeout=5)  # fmt: skip
        self.store = JobStore(self.redis, self.keys, self.settings.jobs)
        await self.store.ensure_group()
        log_event(log, "worker_started", worker=self.name, backend=self.backend.name)
        lease_ms = int(self.settings.jobs.lease_s * 1000)
        slots = self.settings.backend.concurrency
        proposals = asyncio.create_task(serve_proposals(
            self.redis, self.keys, self.backend, self.settings.limits.media(),
            self._default_size(), stop,
        ))  # fmt: skip
        try:
            while not stop.is_set():
                try:
                    await self._take_jobs(slots, lease_ms)
                except REDIS_DOWN as exc:
                    # Redis restarts or is unreachable: jobs in hand stop at their next
                    # write; this loop waits and goes on (entries are re-claimed after).
                    log_event(log, "redis_unavailable", logging.WARNING, worker=self.name,
                              error=type(exc).__name__)  # fmt: skip
                    await asyncio.sleep(1.0)
        finally:
            for token in self.tokens.values():
                token.cancel("the worker is stopping")
            proposals.cancel()
            if self.tasks:
                await asyncio.wait(self.tasks, timeout=10)
            with contextlib.suppress(Exception):
                await self.redis.delete(self.keys.worker(self.name))
            await self.redis.aclose()
            log_event(log, "worker_stopped", worker=self.name, jobs=self.jobs_done)

    async def _take_jobs(self, slots: int, lease_ms: int) -> None:
        await self.redis.set(self.keys.worker(self.name), "1", ex=HEARTBEAT_TTL_S)
        free = slots - len(self.tasks)
        if free <= 0:
            await asyncio.wait(self.tasks, timeout=1.0, return_when="FIRST_COMPLETED")
            return
        entries, self._reclaim_cursor = await self.store.reclaim(
            self.name, lease_ms, free, self._reclaim_cursor
        )
        if not entries:
            entries = await self.store.read_queue(self.name, free, block_ms=500)
        for entry_id, job_id in entries:
            task = asyncio.create_task(self._handle(entry_id, job_id))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _handle(self, entry_id: str, job_id: str) -> None:
        try:
            await self._run_claimed(entry_id, job_id)
        except REDIS_DOWN as exc:
            # Nothing can be recorded now; the entry stays pending and is claimed again
            # (by this worker or another) once Redis is back and the lease has run out.
            log_event(log, "job_released", logging.WARNING, trace_id=job_id, worker=self.name,
                      reason=f"redis: {type(exc).__name__}")  # fmt: skip

    async def _run_claimed(self, entry_id: str, job_id: str) -> None:
        store = self.store
        fence = await store.claim(job_id, self.name)
        if fence == 0:  # deleted, cancelled or finished meanwhile
            await store.ack(entry_id)
            return
        if fence < 0:
            await store.finish(job_id, None, "failed", "internal",
                               "the job stopped its workers too many times")  # fmt: skip
            await store.ack(entry_id)
            return
        job = await store.get(job_id)
        if job is None:  # deleted in the moment since the claim
            await store.ack(entry_id)
            return
        token = CancelToken()
        self.tokens[(job_id, fence)] = token
        context = JobContext(job_id, fence, store, self.blobs, asyncio.get_running_loop(), token)
        self.contexts[job_id] = context
        lease = asyncio.create_task(self._keep_lease(context, entry_id))
        log_event(log, "job_claimed", trace_id=job_id, worker=self.name, fence=fence,
                  attempt=job.get("attempts"))  # fmt: skip
        started = time.perf_counter()
        holds = True
        try:
            request = segment_request(
                job, self.blobs, self.settings.limits.media(), self._default_size(),
                local_cpu=self.backend.name == "local" and self.settings.backend.device == "cpu",
            )  # fmt: skip
            outputs = await run_job(context, job, self.backend, request)
            holds = await store.finish(job_id, fence, "succeeded", outputs=outputs)
            log_event(log, "job_succeeded", trace_id=job_id, worker=self.name,
                      seconds=round(time.perf_counter() - started, 3))  # fmt: skip
        except Fenced:
            holds = False
            log_event(log, "job_fenced", trace_id=job_id, worker=self.name, fence=fence)
        except REDIS_DOWN:
            raise
        except IsvosError as exc:
            if exc.code == "cancelled" and token.cancelled and not await store.holds(job_id, fence):
                holds = False
                log_event(log, "job_fenced", trace_id=job_id, worker=self.name, fence=fence)
            elif exc.code == "cancelled" and token.cancelled:
                holds = False  # the worker is stopping: another one resumes the job
                log_event(log, "job_released", trace_id=job_id, worker=self.name)
            elif exc.retryable:
                # The inference server is down, full or slow: not the job's fault. Leave the
                # entry pending; after the lease a worker claims it again (attempts count).
                holds = False
                log_event(log, "job_released", logging.WARNING, trace_id=job_id,
                          worker=self.name, code=exc.code, message=exc.message)  # fmt: skip
            else:
                holds = await store.finish(job_id, fence, "failed", exc.code, exc.message)
                log_event(log, "job_failed", trace_id=job_id, worker=self.name, code=exc.code,
                          message=exc.message)  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - a bug: the job fails, the worker goes on
            log.exception("job %s failed", job_id)
            holds = await store.finish(job_id, fence, "failed", "internal",
                                       f"{type(exc).__name__}: {exc}")  # fmt: skip
        finally:
            lease.cancel()
            self.tokens.pop((job_id, fence), None)
            if self.contexts.get(job_id) is context:
                del self.contexts[job_id]
            self.jobs_done += 1
        if holds:
            await store.ack(entry_id)

    async def _keep_lease(self, context: JobContext, entry_id: str) -> None:
        """Renew the entry's claim and watch for losing the job (cancel, another worker)."""
        every = self.settings.jobs.renew_every_s
        while True:
            await asyncio.sleep(min(every, 1.0))
            try:
                if not await self.store.renew(context.job_id, context.fence, self.name, entry_id):
                    context.cancel.cancel(f"job {context.job_id} moved on or was cancelled")
                    return
            except Exception:  # noqa: BLE001 - Redis blips: the next round retries
                log.warning("lease renewal of %s failed", context.job_id, exc_info=True)

    async def _record_endpoint(self, job_id: str, endpoint: str) -> None:
        """The inference server that holds the job's session, in the job's hash (fenced)."""
        context = self.contexts.get(job_id)
        if context is not None:
            log_event(log, "session_placed", trace_id=job_id, endpoint=endpoint)
            await self.store.report(job_id, context.fence, {"endpoint": endpoint})

    def _default_size(self) -> int:
        from isvos.config import get_config

        return get_config(self.settings.backend.config).default_short_side
