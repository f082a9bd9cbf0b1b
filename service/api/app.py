"""The FastAPI gateway: ``create_app(settings)``. OpenAPI at ``/docs``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import redis.asyncio as aioredis
from fastapi import FastAPI, Request

from isvos import __version__
from service.api import errors, openapi
from service.api.body_timeout import BodyIdleTimeout
from service.api.deps import Gateway
from service.api.metrics import REQUESTS
from service.api.routes import jobs, media, proposals, revisions, system, web
from service.api.routes.uploads import UploadMetadataDefaults, uploads_router
from service.blobs import LocalBlobStore
from service.jobs.store import JobStore
from service.jobs.sweeper import sweep_forever
from service.keys import Keys
from service.logs import log_event
from service.media.frames import FrameServer
from service.settings import Settings

log = logging.getLogger("isvos.gateway")


def create_app(settings: Settings) -> FastAPI:
    data = settings.storage.data_dir
    uploads_dir = (data / "uploads").resolve()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        redis = aioredis.from_url(settings.redis.url)
        keys = Keys(settings.redis.key_prefix)
        store = JobStore(redis, keys, settings.jobs)
        await store.ensure_group()
        blobs = LocalBlobStore(data / "blobs")
        frames = FrameServer(settings.limits.media())
        app.state.gateway = Gateway(settings, redis, keys, store, blobs, uploads_dir, frames)
        sweeper = asyncio.create_task(sweep_forever(app.state.gateway))
        log_event(log, "gateway_started", backend=settings.backend.kind,
                  auth=settings.auth.enabled)  # fmt: skip
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            await redis.aclose()

    app = FastAPI(
        title="ISVOS video object segmentation",
        version=__version__,
        description="Masks for every object in every frame, from first-frame masks. "
        "Errors are JSON {code, message}; the codes are listed in docs/runtime.md.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    errors.install(app)
    openapi.install(app)
    app.include_router(jobs.router)
    app.include_router(proposals.router)
    app.include_router(revisions.router)
    app.include_router(media.router)
    web.mount(app)
    app.include_router(uploads_router(settings, uploads_dir))
    app.include_router(system.router)
    app.add_middleware(UploadMetadataDefaults)
    app.add_middleware(BodyIdleTimeout, idle_s=settings.limits.body_idle_timeout_s)

    @app.middleware("http")
    async def access_log(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        REQUESTS.labels(path, str(response.status_code)).inc()
        trace = request.path_params.get("job_id") if request.path_params else None
        log_event(log, "request", method=request.method, route=path,
                  status=response.status_code, trace_id=trace,
                  ms=round((time.perf_counter() - started) * 1e3, 1))  # fmt: skip
        return response

    return app
