"""Start a local Triton server on the ``isvos`` model repository (tests, benchmarks, laptops).

Uses the ``tritonserver`` binary of the ``nvidia-pytriton`` wheel (Triton 2.51, python
backend only), set up as docs/ENVIRONMENT.md prescribes:

- the wheel's ``backends/`` and ``caches/`` are *copied* (once, into a cache folder) and the
  python stub for this interpreter is copied into ``backends/python/``;
- ``LD_LIBRARY_PATH`` holds the wheel's ``nvidia_pytriton.libs`` and this interpreter's
  ``LIBDIR``; this environment's ``bin/`` comes first on ``PATH`` (the stub finds the
  environment, and so the ``isvos`` package, through ``python3``);
- every server gets a private shared-memory prefix, removed again on ``stop()``.

Each launch writes a small launch repository in a temporary folder: the model's
``config.pbtxt`` (GPU instances turned into CPU ones on a machine without a GPU, parameters
overridden) and a link to the version folder holding ``model.py`` and the exported graphs.
The graphs are exported into the version folder first when missing or made from other
weights.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import importlib.metadata
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
import uuid
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from isvos.triton_contract import MODEL_NAME, P_DRAIN_FILE

DEFAULT_READY_TIMEOUT_S = 120.0
SYSTEM_TRITON = Path("/opt/tritonserver")  # where NGC's tritonserver images install it
PORT_ATTEMPTS = 5
_BIND_FAILURE = re.compile(
    r"address already in use|failed to (?:start|bind)|bind|same address and port", re.IGNORECASE
)


class TritonStartError(RuntimeError):
    """The server did not become ready (its log's tail is in the message)."""


@dataclass(eq=False)
class LocalTriton:
    """A running local Triton server started by ``start_local_triton``."""

    process: subprocess.Popen
    host: str
    http_port: int
    grpc_port: int
    metrics_port: int | None
    shm_prefix: str
    launch_dir: Path
    log_path: Path
    device: str
    drain_file: str = ""
    command: list[str] = field(repr=False, default_factory=list)
    _stopped: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        """gRPC address ``HOST:PORT`` (what ``TritonBackend`` and ``--triton-url`` take)."""
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def metrics_url(self) -> str | None:
        if self.metrics_port is None:
            return None
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def alive(self) -> bool:
        return self.process.poll() is None

    def drain(self, draining: bool = True) -> None:
        set_draining(self.drain_file, draining)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def kill(self) -> None:
        """Kill the server and its python stubs at once (no graceful shutdown)."""
        self._signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        _clean_shm(self.shm_prefix)

    def stop(self, timeout: float = 15.0) -> None:
        """Shut the server down (SIGTERM, then SIGKILL), clean its shm and launch folder."""
        if self._stopped:
            return
        self._stopped = True
        if self.process.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=10)
        # Stubs left behind by a killed server exit on their own; make sure.
        self._signal(signal.SIGKILL, group_only=True)
        _clean_shm(self.shm_prefix)
        shutil.rmtree(self.launch_dir, ignore_errors=True)

    def _signal(self, sig: int, group_only: bool = False) -> None:
        # The server runs in its own process group (start_new_session): that group holds
        # the server and the python stubs it started, nothing else.
        try:
            os.killpg(self.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            if not group_only and self.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self.process.send_signal(sig)

    def __enter__(self) -> LocalTriton:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------------- public entry


def start_local_triton(
    model_repo: str | Path,
    *,
    export_config: str | None = "tiny",
    checkpoint: str | Path | None = None,
    http_port: int | None = None,
    grpc_port: int | None = None,
    metrics_port: int | None = None,
    metrics: bool = False,
    host: str = "127.0.0.1",
    device: str = "auto",
    parameters: dict[str, str | int | float] | None = None,
    instance_count: int | None = None,
    ready_timeout: float = DEFAULT_READY_TIMEOUT_S,
    cache_dir: str | Path | None = None,
    log_verbose: int = 0,
    extra_args: list[str] | None = None,
) -> LocalTriton:
    """Start ``tritonserver`` on ``model_repo`` and wait until it is ready.

    ``export_config``/``checkpoint``: the model exported into ``<repo>/isvos/1`` when the
    graphs are missing or were made from other weights (``None``: use what is there).
    Ports left ``None`` are picked free (and re-picked if the server cannot bind them).
    ``metrics``: serve Prometheus metrics (on ``metrics_port`` or a free one). ``device``:
    ``auto`` (GPU instances when ``nvidia-smi`` lists a GPU), ``cpu`` or ``gpu``.
    ``parameters`` override the model's config parameters (docs/triton.md).
    """
    model_repo = Path(model_repo).resolve()
    model_dir = model_repo / MODEL_NAME
    config_path = model_dir / "config.pbtxt"
    if not config_path.exists():
        raise FileNotFoundError(f"{config_path} not found")
    version_dir = model_dir / "1"
    if export_config is not None:
        ensure_exported(version_dir, export_config, checkpoint)
    if device == "auto":
        device = "gpu" if gpu_available() else "cpu"
    if device not in ("cpu", "gpu"):
        raise ValueError(f"device must be auto, cpu or gpu, not {device!r}")
    server = triton_paths()
    backend_dir, triton_cache = prepare_backend_dir(server, cache_dir)
    launch_dir = Path(tempfile.mkdtemp(prefix="isvos-triton-"))
    parameters = dict(parameters or {})
    parameters.setdefault(P_DRAIN_FILE, str(launch_dir / "DRAINING"))  # one per server
    try:
        _write_launch_repository(
            launch_dir / "repo", config_path, version_dir, device, parameters, instance_count
        )
    except BaseException:
        shutil.rmtree(launch_dir, ignore_errors=True)
        raise
    env = server_environment(server)
    shm_prefix = f"isvos_{os.getpid()}_{uuid.uuid4().hex[:8]}_"
    log_path = launch_dir / "tritonserver.log"
    last_error = ""
    for _attempt in range(PORT_ATTEMPTS):
        wanted = {"http": http_port, "grpc": grpc_port}
        if metrics or metrics_port:
            wanted["metrics"] = metrics_port
        ports = pick_ports(wanted, host)
        command = [
            str(server["binary"]),
            f"--model-repository={launch_dir / 'repo'}",
            f"--backend-directory={backend_dir}",
            f"--cache-directory={triton_cache}",
            f"--http-address={host}", f"--http-port={ports['http']}",
            f"--grpc-address={host}", f"--grpc-port={ports['grpc']}",
            "--allow-gpu-metrics=false",
            "--exit-on-error=true",
            "--strict-readiness=true",
            "--disable-auto-complete-config",
            "--exit-timeout-secs=5",
            f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
            f"--log-verbose={log_verbose}",
        ]  # fmt: skip
        if "metrics" in ports:
            command += [
                "--allow-metrics=true", "--allow-cpu-metrics=false",
                f"--metrics-address={host}", f"--metrics-port={ports['metrics']}",
            ]  # fmt: skip
        else:
            command.append("--allow-metrics=false")
        command += extra_args or []
        log = open(log_path, "ab")  # noqa: SIM115 - the child owns it after Popen
        try:
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=launch_dir,
                start_new_session=True,
            )  # fmt: skip
        finally:
            log.close()
        handle = LocalTriton(
            process=process, host=host, http_port=ports["http"], grpc_port=ports["grpc"],
            metrics_port=ports.get("metrics"), shm_prefix=shm_prefix, launch_dir=launch_dir,
            log_path=log_path, device=device, drain_file=str(parameters[P_DRAIN_FILE]),
            command=command,
        )  # fmt: skip
        _live_servers.add(handle)
        try:
            _wait_ready(handle, ready_timeout)
            return handle
        except TritonStartError as exc:
            last_error = str(exc)
            tail = handle.log_tail()
            handle._signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
            _clean_shm(shm_prefix)
            fixed_ports = http_port and grpc_port and (metrics_port or not metrics)
            if process.returncode is not None and _BIND_FAILURE.search(tail) and not fixed_ports:
                continue  # someone took a port between picking and binding: pick again
            shutil.rmtree(launch_dir, ignore_errors=True)
            raise
    shutil.rmtree(launch_dir, ignore_errors=True)
    raise TritonStartError(f"no free ports after {PORT_ATTEMPTS} attempts: {last_error}")


# ---------------------------------------------------------------------- pieces


def drain_file_for(grpc_port: int) -> str:
    """The drain file of the server on ``grpc_port`` (``isvos triton``, ``triton-drain`` and
    ``triton-probe`` agree on it; one per port, so servers on one machine drain apart)."""
    return f"/tmp/isvos-triton-{grpc_port}.drain"


def set_draining(drain_file: str | Path, draining: bool = True) -> None:
    """Start (or end) draining a server: its model refuses new sessions while the file
    exists (``drain_file`` parameter), live sessions go on."""
    path = Path(drain_file)
    if draining:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    else:
        path.unlink(missing_ok=True)


def triton_paths() -> dict[str, Path]:
    """Where the server, its backends and libraries are: a Triton installation (the NGC
    image's ``/opt/tritonserver``, or ``$TRITONSERVER_HOME``), else the nvidia-pytriton
    wheel's."""
    home = os.environ.get("TRITONSERVER_HOME")
    spec = importlib.util.find_spec("pytriton")
    if home or (spec is None and (SYSTEM_TRITON / "bin" / "tritonserver").exists()):
        root = Path(home or SYSTEM_TRITON)
        if not (root / "bin" / "tritonserver").exists():
            raise TritonStartError(f"{root / 'bin' / 'tritonserver'} not found")
        return {"root": root, "binary": root / "bin" / "tritonserver",
                "backends": root / "backends", "caches": root / "caches"}  # fmt: skip
    if spec is None or not spec.submodule_search_locations:
        raise TritonStartError(
            "the tritonserver binary comes from the nvidia-pytriton wheel: "
            "pip install 'isvos[triton]'"
        )
    package = Path(next(iter(spec.submodule_search_locations)))
    root = package / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    paths = {
        "root": root,
        "binary": root / "bin" / "tritonserver",
        "backends": root / "backends",
        "caches": root / "caches",
        "stub": root / "python_backend_stubs" / version / "triton_python_backend_stub",
        "libs": package.parent / "nvidia_pytriton.libs",
    }
    for name in ("binary", "backends", "stub"):
        if not paths[name].exists():
            raise TritonStartError(f"{paths[name]} is missing from the nvidia-pytriton wheel")
    return paths


def prepare_backend_dir(
    server: dict[str, Path], cache_dir: str | Path | None = None
) -> tuple[Path, Path]:
    """Copy the wheel's backends/caches once (no symlinks), with this Python's stub (an
    installation's own folders are used as they are)."""
    if "stub" not in server:
        return server["backends"], server["caches"]
    try:
        wheel_version = importlib.metadata.version("nvidia-pytriton")
    except importlib.metadata.PackageNotFoundError:
        wheel_version = "unknown"
    base = Path(cache_dir) if cache_dir else Path.home() / ".cache" / "isvos"
    key = f"triton-{wheel_version}-py{sys.version_info.major}{sys.version_info.minor}"
    target = base / key
    backends, caches = target / "backends", target / "caches"
    marker = target / ".complete"
    if marker.exists():
        return backends, caches
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(base / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be preparing it
        if marker.exists():
            return backends, caches
        staging = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=base))
        shutil.copytree(server["backends"], staging / "backends", symlinks=False)
        if server["caches"].exists():
            shutil.copytree(server["caches"], staging / "caches", symlinks=False)
        else:
            (staging / "caches").mkdir()
        stub = staging / "backends" / "python" / "triton_python_backend_stub"
        shutil.copy2(server["stub"], stub)
        stub.chmod(0o755)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        marker.touch()
    return backends, caches


def server_environment(server: dict[str, Path]) -> dict[str, str]:
    env = dict(os.environ)
    if "libs" in server:  # the wheel's libraries, and this interpreter's libpython
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        library_path = [str(server["libs"]), libdir, env.get("LD_LIBRARY_PATH", "")]
        env["LD_LIBRARY_PATH"] = ":".join(p for p in library_path if p)
    env_bin = str(Path(sys.prefix) / "bin")
    env["PATH"] = ":".join(p for p in (env_bin, env.get("PATH", "")) if p)
    env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    from isvos.allocator import ENVIRONMENT

    for name, value in ENVIRONMENT.items():  # the python backend's stubs keep freed memory
        env.setdefault(name, value)
    return env


def gpu_available() -> bool:
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the caller retries if it is taken meanwhile)."""
    return pick_ports({"port": None}, host)["port"]


def pick_ports(wanted: dict[str, int | None], host: str = "127.0.0.1") -> dict[str, int]:
    """Fill the ``None`` entries with distinct free ports: each is bound (port 0) and held
    until all are picked, so two of them cannot coincide; the server binds them right
    after, and ``start_local_triton`` picks again if one was taken meanwhile."""
    held: list[socket.socket] = []
    ports = dict(wanted)
    try:
        for name, port in wanted.items():
            if port:
                continue
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(sock)
            sock.bind((host, 0))
            ports[name] = sock.getsockname()[1]
    finally:
        for sock in held:
            sock.close()
    if len(set(ports.values())) != len(ports):
        raise ValueError(f"ports must differ: {ports}")
    return ports  # type: ignore[return-value]


def ensure_exported(version_dir: Path, config: str, checkpoint: str | Path | None = None) -> bool:
    """Export ``config`` (+ ``checkpoint``) into ``version_dir`` unless it is already there.

    Re-exports when the manifest is missing, predates graph hashes, names another config,
    or (with a checkpoint) records other weights. Returns True when it exported.
    """
    import json

    manifest_path = version_dir / "manifest.json"
    manifest = None
    if manifest_path.exists() and (version_dir / "isvos.pt").exists():
        with contextlib.suppress(ValueError, OSError):
            manifest = json.loads(manifest_path.read_text())
    if manifest is not None and not manifest.get("graphs_sha256"):
        manifest = None  # an export from before graph hashes: the runner refuses it
    if manifest is not None and manifest.get("config", {}).get("name") == config:
        if checkpoint is None:
            return False
    from isvos.export import export_model
    from isvos.model import build
    from isvos.model.build import model_hash

    model = build(config, str(checkpoint) if checkpoint is not None else None)
    if manifest is not None and manifest.get("model_hash") == model_hash(model):
        return False
    export_model(model, version_dir, checkpoint=str(checkpoint) if checkpoint else None)
    return True


def exported_repository(source_repo: str | Path, out: str | Path, config: str,
                        checkpoint: str | Path | None = None) -> Path:  # fmt: skip
    """A model repository at ``out``: ``source_repo``'s config and python model, with
    ``config`` (+ ``checkpoint``) exported into its version folder."""
    source, version = Path(source_repo) / MODEL_NAME, Path(out) / MODEL_NAME / "1"
    version.mkdir(parents=True, exist_ok=True)
    shutil.copy(source / "config.pbtxt", version.parent / "config.pbtxt")
    shutil.copy(source / "1" / "model.py", version / "model.py")
    ensure_exported(version, config, checkpoint)
    return Path(out)


def write_cpu_repository(model_repo: str | Path, out: str | Path) -> Path:
    """A copy of ``model_repo`` whose GPU instances are CPU instances (graphs linked)."""
    source = Path(model_repo).resolve() / MODEL_NAME
    target = Path(out)
    _write_launch_repository(target, source / "config.pbtxt", source / "1", "cpu", {}, None)
    return target


def _write_launch_repository(
    repo: Path,
    config_path: Path,
    version_dir: Path,
    device: str,
    parameters: dict,
    instance_count: int | None,
) -> None:
    text = config_path.read_text()
    if device == "cpu":
        text = text.replace("KIND_GPU", "KIND_CPU")
    if instance_count is not None:
        text, n = re.subn(
            r"(instance_group\s*\[\s*\{[^}]*?count:\s*)\d+", rf"\g<1>{instance_count}", text
        )
        if n == 0:
            raise ValueError("config.pbtxt has no instance_group count to override")
    for key, value in parameters.items():
        text = set_parameter(text, key, str(value))
    model_dir = repo / MODEL_NAME
    model_dir.mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(text)
    try:
        (model_dir / "1").symlink_to(version_dir.resolve(), target_is_directory=True)
    except OSError as exc:  # pragma: no cover - file systems without links
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP):
            raise
        shutil.copytree(version_dir, model_dir / "1")


def set_parameter(config_text: str, key: str, value: str) -> str:
    """Set a string parameter in a config.pbtxt text (replace it, or append it)."""
    pattern = re.compile(
        r'(key:\s*"' + re.escape(key) + r'"\s*,?\s*value:\s*\{\s*string_value:\s*")[^"]*(")'
    )
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    text, n = pattern.subn(lambda m: m.group(1) + escaped + m.group(2), config_text)
    if n == 0:
        text = config_text.rstrip() + (
            f'\nparameters {{ key: "{key}" value: {{ string_value: "{escaped}" }} }}\n'
        )
    return text


def _wait_ready(handle: LocalTriton, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    url = f"{handle.http_url}/v2/health/ready"
    while time.monotonic() < deadline:
        if handle.process.poll() is not None:
            raise TritonStartError(
                f"tritonserver exited with {handle.process.returncode} before it was ready:\n"
                + handle.log_tail()
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.1)
    raise TritonStartError(
        f"tritonserver was not ready within {timeout:.0f} s:\n" + handle.log_tail()
    )


def _clean_shm(prefix: str) -> None:
    shm = Path("/dev/shm")
    if not prefix or not shm.is_dir():
        return
    for path in shm.glob(f"{prefix}*"):
        with contextlib.suppress(OSError):
            path.unlink()


_live_servers: weakref.WeakSet[LocalTriton] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:  # pragma: no cover - interpreter exit
    for server in list(_live_servers):
        with contextlib.suppress(Exception):
            server.stop(timeout=5)
