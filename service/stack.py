"""The deployed topology as plain processes on one machine (``isvos stack``).

What ``docker-compose.yml`` runs, without Docker: Redis with the compose persistence
settings, several Triton servers (``isvos triton``: the nvidia-pytriton wheel's binary
here, the image's tritonserver in a container), the HTTP gateway (``isvos gateway``), the
gRPC server (``isvos grpc``) and workers (``isvos worker``) on the Triton backend, each
started with the command line its image runs and configured by the same ``ISVOS_*``
variables. Ports left at 0 are taken free and read back from each process's output. Logs go
to ``<data dir>/logs/``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from service.redis_server import RedisProcess, start_redis
from service.triton_server import set_draining

READY_TIMEOUT_S = 180.0
_TRITON_READY = re.compile(r"triton ready \(\w+\): grpc (\S+), http (\S+),")


@dataclass
class StackOptions:
    data_dir: Path
    tritons: int = 2
    workers: int = 2
    http_port: int = 8080
    grpc_port: int = 50051
    model_repo: Path = Path("model_repo")
    config: str = "lite"
    checkpoint: str | None = None
    device: str = "auto"
    # Model parameters of every Triton server (docs/triton.md), e.g. torch_threads.
    triton_params: dict[str, str] = field(default_factory=dict)
    # More ISVOS_* settings for the gateway, gRPC server and workers.
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class _Process:
    name: str
    process: subprocess.Popen
    log_path: Path
    args: list[str] = field(default_factory=list)  # ``isvos ARGS``, to start it again
    env: dict[str, str] = field(default_factory=dict)
    log_offset: int = 0  # where this run's output begins in the (appended) log
    restarts: int = 0

    def log(self) -> str:
        """This run's output."""
        if not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as log:
            log.seek(self.log_offset)
            return log.read().decode(errors="replace")

    def kill(self) -> None:
        """SIGKILL (a crashed process or a pod killed for memory)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)


@dataclass
class TritonProcess(_Process):
    url: str = ""  # gRPC HOST:PORT
    http_url: str = ""
    drain_file: str = ""

    def server_pid(self) -> int | None:
        """The tritonserver started by this ``isvos triton``."""
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(stat[1]) == self.process.pid:
                    return int(entry.name)
        return None

    def crash(self) -> None:
        """SIGKILL the server and its python stubs (a crashed pod), then its supervisor."""
        pid = self.server_pid()
        if pid is not None:
            try:
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.process.poll() is None:  # no server to kill (not started yet, or gone)
            self.process.kill()
        self.process.wait(30)

    def kill(self) -> None:
        self.crash()

    def drain(self, draining: bool = True) -> None:
        set_draining(self.drain_file, draining)


class LocalStack:
    def __init__(self, options: StackOptions) -> None:
        self.options = options
        self.data_dir = Path(options.data_dir).resolve()
        self.logs = self.data_dir / "logs"
        self.redis: RedisProcess | None = None
        self.tritons: list[TritonProcess] = []
        self.gateway: _Process | None = None
        self.grpc: _Process | None = None
        self.workers: list[_Process] = []
        self.http_url = ""
        self.grpc_target = ""

    # ------------------------------------------------------------------ start and stop

    def start(self) -> LocalStack:
        """Start every service in dependency order, each once the ones it needs are ready."""
        o = self.options
        self.logs.mkdir(parents=True, exist_ok=True)
        try:
            self.redis = start_redis(self.data_dir / "redis")
            self.tritons = [self._start_triton(i) for i in range(o.tritons)]
            for triton in self.tritons:
                self._wait_triton(triton)
            env = self.service_env()
            self.gateway = self._spawn("gateway", ["gateway"],
                                       {**env, "ISVOS_PORT": str(o.http_port)})  # fmt: skip
            self.grpc = self._spawn("grpc", ["grpc"],
                                    {**env, "ISVOS_GRPC__PORT": str(o.grpc_port)})  # fmt: skip
            http_port = self._wait_port(self.gateway, "gateway_listening")
            grpc_port = self._wait_port(self.grpc, "grpc_started")
            self.gateway.env["ISVOS_PORT"] = str(http_port)  # restarts keep their ports
            self.grpc.env["ISVOS_GRPC__PORT"] = str(grpc_port)
            self.http_url = f"http://127.0.0.1:{http_port}"
            self.grpc_target = f"127.0.0.1:{grpc_port}"
            self.workers = [self._spawn(f"worker-{i}", ["worker", "--name", f"stack-worker-{i}"],
                                        env) for i in range(o.workers)]  # fmt: skip
            for worker in self.workers:
                self._wait_event(worker, "worker_started")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGTERM in reverse order (workers hand their jobs back, Redis writes its file)."""
        for proc in [*self.workers, self.grpc, self.gateway, *self.tritons]:
            if proc is not None and proc.process.poll() is None:
                proc.process.send_signal(signal.SIGTERM)
        for proc in [*self.workers, self.grpc, self.gateway, *self.tritons]:
            if proc is not None:
                try:
                    proc.process.wait(30)
                except subprocess.TimeoutExpired:
                    proc.process.kill()
                    proc.process.wait()
        if self.redis is not None:
            self.redis.stop()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def service_env(self) -> dict[str, str]:
        """The ISVOS_* settings of the gateway, gRPC server and workers."""
        return {
            "ISVOS_REDIS__URL": self.redis.url,
            "ISVOS_STORAGE__DATA_DIR": str(self.data_dir / "data"),
            "ISVOS_BACKEND__KIND": "triton",
            "ISVOS_BACKEND__TRITON_URLS": json.dumps([t.url for t in self.tritons]),
            "ISVOS_BACKEND__CONFIG": self.options.config,
            "ISVOS_BACKEND__CONCURRENCY": "4",
            "ISVOS_LOG_LEVEL": "info",
            **self.options.env,
        }

    # ------------------------------------------------------------------ pieces

    def _start_triton(self, index: int) -> TritonProcess:
        o = self.options
        drain_file = self.data_dir / f"triton-{index}.drain"
        args = ["triton", "--model-repo", str(Path(o.model_repo).resolve()),
                "--config", o.config, "--host", "127.0.0.1", "--grpc-port", "0",
                "--http-port", "0", "--metrics-port", "0", "--device", o.device,
                "--drain-file", str(drain_file)]  # fmt: skip
        if o.checkpoint:
            args += ["--checkpoint", str(o.checkpoint)]
        for key, value in o.triton_params.items():
            args += ["--param", f"{key}={value}"]
        base = self._spawn(f"triton-{index}", args, {})
        return TritonProcess(base.name, base.process, base.log_path, base.args, base.env,
                             base.log_offset, drain_file=str(drain_file))  # fmt: skip

    def _wait_triton(self, triton: TritonProcess) -> None:
        found = self._wait_for(triton, lambda text: _TRITON_READY.search(text))
        triton.url, triton.http_url = found.group(1), found.group(2)
        # A restart listens where the clients already point.
        ports = {"--grpc-port": triton.url.rsplit(":", 1)[1],
                 "--http-port": triton.http_url.rsplit(":", 1)[1]}  # fmt: skip
        for i, arg in enumerate(triton.args[:-1]):
            if arg in ports:
                triton.args[i + 1] = ports[arg]

    # ------------------------------------------------------------------ restarts

    def restart(self, proc: _Process) -> None:
        """Start ``proc`` again (killed or not) with its command line and settings, on the
        ports it had, and return once it is ready (what a pod restart does)."""
        if proc.process.poll() is None:
            proc.kill()
        again = self._spawn(proc.name, proc.args, proc.env)
        proc.process, proc.log_offset = again.process, again.log_offset
        proc.restarts += 1
        if isinstance(proc, TritonProcess):
            self._wait_triton(proc)
        elif proc is self.gateway:
            self._wait_event(proc, "gateway_listening")
        elif proc is self.grpc:
            self._wait_event(proc, "grpc_started")
        else:
            self._wait_event(proc, "worker_started")

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> _Process:
        """``isvos ARGS`` (as the images run it) with ``env`` over this environment."""
        full = {k: v for k, v in os.environ.items() if not k.startswith("ISVOS_")}
        full.update(env)
        log_path = self.logs / f"{name}.log"
        with open(log_path, "ab") as log:
            offset = log.tell()
            process = subprocess.Popen([sys.executable, "-m", "service.cli", *args], env=full,
                                       stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        return _Process(name, process, log_path, list(args), dict(env), offset)

    def _wait_event(self, proc: _Process, event: str) -> dict:
        def find(text: str):
            for line in text.splitlines():
                if line.startswith("{") and f'"{event}"' in line:
                    try:
                        record = json.loads(line)
                    except ValueError:
                        continue
                    if record.get("event") == event:
                        return record
            return None

        return self._wait_for(proc, find)

    def _wait_port(self, proc: _Process, event: str) -> int:
        return int(self._wait_event(proc, event)["port"])

    @staticmethod
    def _wait_for(proc: _Process, find):
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            found = find(proc.log())
            if found:
                return found
            if proc.process.poll() is not None:
                raise RuntimeError(f"{proc.name} exited with {proc.process.returncode}:\n"
                                   f"{proc.log()[-3000:]}")  # fmt: skip
            if time.monotonic() > deadline:
                raise RuntimeError(f"{proc.name} was not ready in time:\n{proc.log()[-3000:]}")
            time.sleep(0.1)
