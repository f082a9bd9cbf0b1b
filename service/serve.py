"""``isvos serve`` and ``isvos worker``: the gateway and its workers as one process group.

``serve`` starts a private Redis when no URL is set (the embedded default), ``workers``
worker processes (``isvos worker``, each with the service's effective settings in its
environment) and the gateway (uvicorn) in the foreground. Ctrl-C stops everything cleanly:
the gateway finishes its requests, workers stop their jobs (another worker resumes them from
their records), Redis writes its append-only file. A second Ctrl-C kills.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from service.settings import Settings

WORKER_STOP_S = 15.0


def settings_env(settings: Settings) -> dict[str, str]:
    """``ISVOS_*`` variables that rebuild ``settings`` in another process."""
    env = {}
    for name, value in settings.model_dump(mode="json").items():
        if isinstance(value, dict):
            for key, inner in value.items():
                env[f"ISVOS_{name.upper()}__{key.upper()}"] = (
                    json.dumps(inner) if isinstance(inner, list | dict) else str(inner)
                )
        else:
            env[f"ISVOS_{name.upper()}"] = str(value)
    return env


def _child(settings: Settings, *args: str) -> subprocess.Popen:
    """``isvos ARGS`` in a child process with the service's effective settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISVOS_")}
    env.update(settings_env(settings))
    return subprocess.Popen([sys.executable, "-m", "service.cli", *args], env=env)


def with_redis(settings: Settings):
    """``settings`` with a Redis URL: the given one, or a private server's (returned too)."""
    from service.redis_server import start_redis

    if settings.redis.url:
        return settings, None
    process = start_redis(Path(settings.storage.data_dir) / "redis")
    redis = settings.redis.model_copy(update={"url": process.url})
    return settings.model_copy(update={"redis": redis}), process


def _stop_workers(workers: list[subprocess.Popen], timeout: float = WORKER_STOP_S) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for worker in workers:
        try:
            worker.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def serve(settings: Settings, grpc: bool = False) -> None:
    """The gateway in the foreground; workers (and the gRPC server with ``grpc``) as
    children; a private Redis when no URL is set."""
    from service.logs import setup_logging

    setup_logging(settings.log_level)
    settings, redis_process = with_redis(settings)
    workers = [_child(settings, "worker", "--name", f"serve-{i}")
               for i in range(settings.workers)]  # fmt: skip
    if grpc:
        workers.append(_child(settings, "grpc"))
    try:
        asyncio.run(_gateway(settings))
    finally:
        _stop_workers(workers)
        if redis_process is not None:
            redis_process.stop()


def run_gateway(settings: Settings) -> None:
    """The HTTP gateway alone (containers: workers and gRPC run apart), until SIGTERM."""
    from service.logs import setup_logging

    setup_logging(settings.log_level)
    asyncio.run(_gateway(settings))


async def _gateway(settings: Settings) -> None:
    """uvicorn on the app; logs ``gateway_listening`` with the port it listens on (port 0:
    a free one, for the local stack)."""
    import uvicorn

    from service.api.app import create_app
    from service.logs import log_event

    config = uvicorn.Config(
        create_app(settings), host=settings.host, port=settings.port, log_config=None,
        lifespan="on", timeout_graceful_shutdown=10,
    )  # fmt: skip
    server = uvicorn.Server(config)

    async def announce() -> None:
        while not server.started:
            if server.should_exit:
                return
            await asyncio.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        log_event(logging.getLogger("isvos.gateway"), "gateway_listening", port=port)

    announcer = asyncio.create_task(announce())
    try:
        await server.serve()
    finally:
        announcer.cancel()


def run_grpc(settings: Settings) -> None:
    """The gRPC server until SIGTERM or SIGINT (a second one exits at once)."""
    from service.backends.factory import make_backend
    from service.logs import log_event, setup_logging
    from service.rpc.server import GrpcServer

    setup_logging(settings.log_level)
    settings, redis_process = with_redis(settings)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def request_stop() -> None:
            if stop.is_set():
                os._exit(130)
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, request_stop)
        backend = await asyncio.to_thread(make_backend, settings)
        server = GrpcServer(settings, backend)
        await server.start()
        log_event(logging.getLogger("isvos.grpc"), "grpc_started", port=server.port,
                  tls=bool(settings.grpc.tls_cert))  # fmt: skip
        try:
            await stop.wait()
        finally:
            await server.stop()
            with contextlib.suppress(Exception):
                await backend.aclose()

    try:
        asyncio.run(main())
    finally:
        if redis_process is not None:
            redis_process.stop()


def run_worker(settings: Settings, name: str | None = None) -> None:
    """One worker until SIGTERM or SIGINT (a second one exits at once)."""
    from service.backends.factory import make_backend
    from service.logs import setup_logging
    from service.worker.worker import Worker

    setup_logging(settings.log_level)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def request_stop() -> None:
            if stop.is_set():
                os._exit(130)  # the second signal: no more waiting
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, request_stop)
        backend = await asyncio.to_thread(make_backend, settings)
        try:
            await Worker(settings, backend, name=name).run(stop)
        finally:
            with contextlib.suppress(Exception):
                await backend.aclose()

    asyncio.run(main())
