"""What routes depend on: the gateway's clients and the caller's identity (one place)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import redis.asyncio as aioredis
from fastapi import Depends, Request

from isvos.errors import IsvosError
from service.auth import ANONYMOUS, authenticate
from service.blobs import LocalBlobStore
from service.jobs.store import JobStore
from service.keys import Keys
from service.media.frames import FrameServer
from service.settings import Settings

__all__ = ["ANONYMOUS", "Gateway", "GatewayDep", "Principal", "PrincipalDep", "owned_job"]


@dataclass
class Gateway:
    """The gateway's clients, created in the app's lifespan (never at import)."""

    settings: Settings
    redis: aioredis.Redis
    keys: Keys
    store: JobStore
    blobs: LocalBlobStore
    uploads_dir: object  # pathlib.Path of the tus uploads
    frames: FrameServer  # video frames as JPEG (the web page)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the name of their API key (``anonymous`` when keys are off)."""

    owner: str


def gateway(request: Request) -> Gateway:
    return request.app.state.gateway


def principal(request: Request) -> Principal:
    """The caller's key from ``Authorization: Bearer <token>`` (``service.auth``)."""
    settings: Settings = request.app.state.settings
    return Principal(authenticate(settings.auth, request.headers.get("authorization")))


GatewayDep = Annotated[Gateway, Depends(gateway)]
PrincipalDep = Annotated[Principal, Depends(principal)]


async def owned_job(job_id: str, gw: Gateway, who: Principal) -> dict[str, str]:
    """The job if it exists and belongs to the caller; ``not_found`` otherwise (another
    key's job looks exactly like a missing one)."""
    if not _plausible_id(job_id):
        raise IsvosError("not_found", f"no job {job_id[:64]!r}")
    job = await gw.store.get(job_id)
    if job is None or job.get("owner") != who.owner:
        raise IsvosError("not_found", f"no job {job_id!r}")
    return job


def _plausible_id(job_id: str) -> bool:
    return len(job_id) == 32 and all(c in "0123456789abcdef" for c in job_id)
