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


def _start_worker(settings: Settings, index: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISVOS_")}
    env.update(settings_env(settings))
    command = [sys.executable, "-m", "service.cli", "worker", "--name", f"serve-{index}"]
    return subprocess.Popen(command, env=env)


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


def serve(settings: Settings) -> None:
    import uvicorn

    from service.api.app import create_app
    from service.logs import setup_logging
    from service.redis_server import start_redis

    setup_logging(settings.log_level)
    redis_process = None
    if not settings.redis.url:
        redis_process = start_redis(Path(settings.storage.data_dir) / "redis")
        redis = settings.redis.model_copy(update={"url": redis_process.url})
        settings = settings.model_copy(update={"redis": redis})
    workers = [_start_worker(settings, i) for i in range(settings.workers)]
    config = uvicorn.Config(
        create_app(settings), host=settings.host, port=settings.port, log_config=None,
        lifespan="on", timeout_graceful_shutdown=10,
    )  # fmt: skip
    server = uvicorn.Server(config)
    try:
        asyncio.run(server.serve())
    finally:
        _stop_workers(workers)
        if redis_process is not None:
            redis_process.stop()


def run_worker(settings: Settings, name: str | None = None) -> None:
    """One worker until SIGTERM or SIGINT (a second one exits at once)."""
    from service.logs import setup_logging
    from service.worker.worker import Worker, make_backend

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
