"""Health, readiness and metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api.deps import GatewayDep
from service.api.errors import error_response
from service.api.metrics import REGISTRY, SNAPSHOT

router = APIRouter(tags=["system"])


@router.get("/healthz", summary="The gateway process is up")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", summary="Redis and the backend are reachable")
async def readyz(gw: GatewayDep):
    try:
        await asyncio.wait_for(gw.redis.ping(), timeout=2)
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        return error_response("unavailable", f"redis is not reachable: {type(exc).__name__}")
    backend = gw.settings.backend
    if backend.kind == "triton":
        if not await _triton_ready(backend.triton_urls):
            return error_response("unavailable", "no Triton server is ready")
    else:
        workers = [key async for key in gw.redis.scan_iter(match=gw.keys.workers_pattern)]
        if not workers:
            return error_response("unavailable", "no worker is running")
    return {"status": "ready"}


async def _triton_ready(urls: list[str]) -> bool:
    import tritonclient.grpc.aio as aiogrpcclient

    for url in urls:
        client = aiogrpcclient.InferenceServerClient(url)
        try:
            if await client.is_server_ready(client_timeout=2):
                return True
        except Exception:  # noqa: BLE001 - try the next one
            pass
        finally:
            await client.close()
    return False


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(gw: GatewayDep) -> Response:
    await SNAPSHOT.refresh(gw)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
