"""The job service for tests, as real parts: a Redis server, the gateway (uvicorn on a free
port, in a thread) and worker processes (``isvos worker``), on the tiny checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx

from service.redis_server import free_port
from service.serve import settings_env
from service.settings import Settings
from tests.conftest import REPO, TINY_CHECKPOINT


def make_settings(redis_url: str, data_dir: Path, **sections) -> Settings:
    """Settings of a test service: the tiny checkpoint, short leases, its own key prefix."""
    base = {
        "redis": {"url": redis_url, "key_prefix": f"t{uuid.uuid4().hex[:10]}"},
        "backend": {"config": "tiny", "checkpoint": str(TINY_CHECKPOINT), "threads": 1},
        "storage": {"data_dir": str(data_dir)},
        "jobs": {"lease_s": 2.0, "retention_s": 3600, "sweep_every_s": 3600},
    }
    for name, values in sections.items():
        if isinstance(values, dict):
            base.setdefault(name, {}).update(values)
        else:
            base[name] = values
    return Settings(**base)


def terminate(process: subprocess.Popen, timeout: float) -> None:
    """SIGTERM, then SIGKILL once ``timeout`` passes; returns once the process is gone."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class GatewayServer:
    """The FastAPI app under uvicorn on a free port, in a thread of this process."""

    def __init__(self, settings: Settings, port: int | None = None) -> None:
        import uvicorn

        from service.api.app import create_app

        self.settings = settings
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=self.port,
                                log_config=None, lifespan="on")  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.02)

    def client(self, api_key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


class WorkerProcess:
    """``isvos worker`` in a process of its own, logging JSON lines to a file."""

    def __init__(self, settings: Settings, log_dir: Path, name: str | None = None) -> None:
        self.name = name or f"w-{uuid.uuid4().hex[:6]}"
        self.log_path = log_dir / f"{self.name}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ISVOS_")}
        env.update(settings_env(settings))
        env["PYTHONPATH"] = str(REPO)
        self.log_file = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "worker", "--name", self.name],
            env=env, stdout=self.log_file, stderr=subprocess.STDOUT, cwd=REPO,
        )  # fmt: skip

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_started(self, timeout: float = 60) -> WorkerProcess:
        deadline = time.monotonic() + timeout
        while '"worker_started"' not in self.log():
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited:\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{self.log()[-3000:]}")
            time.sleep(0.05)
        return self

    def signal(self, sig: int) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)

    def stop(self, timeout: float = 20) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
        terminate(self.process, timeout)
        self.log_file.close()


def submit(client: httpx.Client, video: Path, masks: list[Path], options: dict | None = None,
           **headers) -> httpx.Response:  # fmt: skip
    import json

    files = [("video", (video.name, video.read_bytes()))]
    files += [("masks", (m.name, m.read_bytes())) for m in masks]
    return client.post("/v1/jobs", files=files, data={"options": json.dumps(options or {})},
                       headers={k.replace("_", "-"): v for k, v in headers.items()})  # fmt: skip


def wait_for(client: httpx.Client, job_id: str, statuses=("succeeded", "failed", "cancelled"),
             timeout: float = 90, check=None) -> dict:  # fmt: skip
    """Poll the job until its status is one of ``statuses`` (or ``check(job)`` holds)."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job.get("status") in statuses or (check is not None and check(job)):
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {job.get('status')}: {job}")
        time.sleep(0.05)


class GrpcProcess:
    """``isvos grpc`` in a process of its own (its port read from its log)."""

    def __init__(self, settings: Settings, log_dir: Path, name: str | None = None) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.name = name or f"g-{uuid.uuid4().hex[:6]}"
        self.port = settings.grpc.port
        self.process = None
        self.start()

    def start(self) -> GrpcProcess:
        import json

        self.log_path = self.log_dir / f"{self.name}-{uuid.uuid4().hex[:4]}.log"
        settings = self.settings
        if self.port:
            settings = settings.model_copy(update={
                "grpc": settings.grpc.model_copy(update={"port": self.port})})  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("ISVOS_")}
        env.update(settings_env(settings))
        env["PYTHONPATH"] = str(REPO)
        self.log_file = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        command = [sys.executable, "-m", "service.cli", "grpc"]
        self.process = subprocess.Popen(
            command, env=env, stdout=self.log_file, stderr=subprocess.STDOUT, cwd=REPO
        )
        deadline = time.monotonic() + 60
        while True:
            text = self.log_path.read_text(errors="replace")
            for line in text.splitlines():
                if '"grpc_started"' in line:
                    self.port = json.loads(line)["port"]
                    self.target = f"127.0.0.1:{self.port}"
                    return self
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the gRPC server did not start:\n{text[-3000:]}")
            time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self.log_file.close()

    def stop(self, timeout: float = 20) -> None:
        if self.process is not None:
            terminate(self.process, timeout)
        if not self.log_file.closed:
            self.log_file.close()
