"""Retention: remove the files of jobs whose retention ran out (their Redis keys expire by
their TTLs), of jobs deleted or refused (folders without a job), and stale uploads."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from service.blobs import job_prefix
from service.logs import log_event

log = logging.getLogger("isvos.sweeper")
# A job folder without a job is removed once nothing in it changed for this long (an upload
# streaming into it keeps touching its file).
ORPHAN_GRACE_S = 300.0


def _newest_mtime(folder: Path) -> float:
    times = [folder.stat().st_mtime]
    times += [p.stat().st_mtime for p in folder.rglob("*") if p.exists()]
    return max(times)


async def sweep_once(gw, now: float | None = None, orphan_grace_s: float = ORPHAN_GRACE_S) -> dict:
    """One pass; returns what it removed (counts)."""
    now = time.time() if now is None else now
    removed = {"expired": 0, "orphans": 0, "uploads": 0}
    for job_id in await gw.store.expired(now):
        await asyncio.to_thread(gw.blobs.delete_prefix, job_prefix(job_id))
        await gw.store.delete(job_id)  # keys, owner sets, idempotency key, expiry entry
        removed["expired"] += 1
    for job_id in await asyncio.to_thread(gw.blobs.prefixes, "jobs"):
        if await gw.redis.exists(gw.keys.job(job_id)):
            continue
        folder = gw.blobs.local_path(job_prefix(job_id))
        if now - await asyncio.to_thread(_newest_mtime, folder) > orphan_grace_s:
            await asyncio.to_thread(gw.blobs.delete_prefix, job_prefix(job_id))
            removed["orphans"] += 1
    uploads = Path(gw.uploads_dir)
    retention = gw.settings.jobs.retention_s
    if uploads.is_dir():
        for path in uploads.glob("*/*"):
            if path.is_file() and now - path.stat().st_mtime > retention:
                path.unlink(missing_ok=True)
                removed["uploads"] += 1
    if any(removed.values()):
        log_event(log, "swept", **removed)
    return removed


async def sweep_forever(gw) -> None:
    while True:
        try:
            await sweep_once(gw)
        except Exception:  # noqa: BLE001 - the next pass retries
            log.warning("sweep failed", exc_info=True)
        await asyncio.sleep(gw.settings.jobs.sweep_every_s)
