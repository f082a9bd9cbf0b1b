"""Operator commands: triton, triton-drain, triton-probe, stack."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from service.cli import (
    DEFAULT_CONFIG,
    EXIT_BAD_INPUT,
    _resolve_checkpoint,
    app,
    fail,
)


@app.command()
def triton(
    model_repo: Annotated[
        Path, typer.Option("--model-repo", help="Model repository (with isvos/config.pbtxt)")
    ] = Path("model_repo"),
    config: Annotated[
        str, typer.Option(help="Config exported into isvos/1 when missing")
    ] = DEFAULT_CONFIG,
    checkpoint: Annotated[
        str | None, typer.Option(help="Checkpoint (default: the shipped one)")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    grpc_port: Annotated[int, typer.Option(help="gRPC port (0 = a free one)")] = 8001,
    http_port: Annotated[int, typer.Option(help="HTTP port (0 = a free one)")] = 8000,
    metrics_port: Annotated[int, typer.Option(help="Metrics port (0 = a free one)")] = 8002,
    device: Annotated[str, typer.Option(help="auto | cpu | gpu")] = "auto",
    param: Annotated[
        list[str] | None, typer.Option("--param", help="Model parameter KEY=VALUE (repeat)")
    ] = None,
    drain_file: Annotated[
        str | None,
        typer.Option(help="Draining while it exists (default /tmp/isvos-triton-PORT.drain)"),
    ] = None,
) -> None:
    """Run a Triton server on the model repository until Ctrl-C / SIGTERM: the image's
    tritonserver (/opt/tritonserver, $TRITONSERVER_HOME), else the nvidia-pytriton wheel's."""
    import signal
    import threading

    from isvos.triton_contract import P_DRAIN_FILE
    from service.triton_server import TritonStartError, drain_file_for, start_local_triton

    parameters = {}
    for item in param or []:
        key, sep, value = item.partition("=")
        if not sep:
            fail(f"--param {item!r} is not KEY=VALUE", EXIT_BAD_INPUT)
        parameters[key] = value
    if drain_file or grpc_port:
        parameters.setdefault(P_DRAIN_FILE, drain_file or drain_file_for(grpc_port))
    try:
        server = start_local_triton(
            model_repo, export_config=config, checkpoint=_resolve_checkpoint(config, checkpoint),
            host=host, grpc_port=grpc_port or None, http_port=http_port or None, metrics=True,
            metrics_port=metrics_port or None, device=device, parameters=parameters,
        )  # fmt: skip
    except (TritonStartError, ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    typer.echo(f"triton ready ({server.device}): grpc {server.url}, http {server.http_url}, "
               f"metrics {server.metrics_url}, drain file {server.drain_file}; Ctrl-C stops "
               "it")  # fmt: skip
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # also when started with SIGINT ignored
        signal.signal(sig, lambda *_: stop.set())
    try:
        while server.alive() and not stop.wait(0.5):
            pass
    finally:
        code = server.process.poll()
        tail = server.log_tail() if code is not None else ""
        server.stop()
    if code not in (None, 0):
        fail(f"tritonserver exited with {code}:\n{tail}")


def _drain_file(drain_file: str | None, url: str) -> str:
    from service.triton_server import drain_file_for

    port = url.rpartition(":")[2]
    if drain_file:
        return drain_file
    if not port.isdigit():
        fail(f"--url {url!r} is not HOST:PORT", EXIT_BAD_INPUT)
    return drain_file_for(int(port))


@app.command("triton-drain")
def triton_drain(
    url: Annotated[str, typer.Option(help="The server's gRPC HOST:PORT")] = "127.0.0.1:8001",
    drain_file: Annotated[
        str | None, typer.Option(help="Its drain file (default: from the port)")
    ] = None,
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for its sessions to end (0: do not wait)")
    ] = 0.0,
    undo: Annotated[bool, typer.Option("--undo", help="Stop draining")] = False,
) -> None:
    """Drain a Triton server on this machine (a pod's preStop hook): no new sessions, live
    ones finish or move; with --wait, return once it holds none (exit 1 if some remain)."""
    import asyncio
    import time

    from service.triton_server import set_draining

    path = Path(_drain_file(drain_file, url))
    set_draining(path, not undo)
    if undo:
        typer.echo(f"{url}: not draining")
        return
    typer.echo(f"{url}: draining ({path})")
    if wait <= 0:
        return
    from service.backends.base import BackendError
    from service.backends.triton import TritonBackend

    async def sessions() -> int | None:
        async with TritonBackend(url, retry_unavailable_s=0) as backend:
            try:
                return int((await backend.stats())["sessions"])
            except BackendError:
                return None  # gone: nothing left to wait for

    deadline = time.monotonic() + wait
    while True:
        left = asyncio.run(sessions())
        if not left:
            typer.echo(f"{url}: drained")
            return
        if time.monotonic() > deadline:
            fail(f"{url}: {left} sessions still live after {wait:.0f} s")
        time.sleep(1.0)


@app.command("triton-probe")
def triton_probe(
    http_url: Annotated[str, typer.Option(help="The server's HTTP URL")] = "http://127.0.0.1:8000",
    url: Annotated[str, typer.Option(help="Its gRPC HOST:PORT (names the drain file)")] = (
        "127.0.0.1:8001"
    ),
    drain_file: Annotated[str | None, typer.Option(help="Its drain file")] = None,
) -> None:
    """Readiness of a Triton server for new sessions (exit 0): /v2/health/ready answers 200
    and the server is not draining. For Kubernetes readiness probes and the local stack."""
    import urllib.error
    import urllib.request

    path = Path(_drain_file(drain_file, url))
    if path.exists():
        fail(f"not ready: draining ({path})")
    try:
        with urllib.request.urlopen(f"{http_url.rstrip('/')}/v2/health/ready", timeout=5) as r:
            status = r.status
    except (urllib.error.URLError, OSError) as exc:
        fail(f"not ready: {exc}")
    if status != 200:
        fail(f"not ready: /v2/health/ready answered {status}")
    typer.echo("ready")


@app.command()
def stack(
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Logs, Redis, blobs")] = Path(
        "stack-data"
    ),
    tritons: Annotated[int, typer.Option(help="Triton servers")] = 2,
    workers: Annotated[int, typer.Option(help="Worker processes")] = 2,
    port: Annotated[int, typer.Option(help="HTTP port of the gateway (0: a free one)")] = 8080,
    grpc_port: Annotated[int, typer.Option(help="gRPC port (0: a free one)")] = 50051,
    model_repo: Annotated[Path, typer.Option("--model-repo")] = Path("model_repo"),
    config: Annotated[str, typer.Option(help="Model config")] = DEFAULT_CONFIG,
    checkpoint: Annotated[str | None, typer.Option(help="Checkpoint")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | gpu")] = "auto",
) -> None:
    """Run the compose topology as plain processes (Redis, Triton servers, gateway, gRPC,
    workers), each with the command line its image runs, until Ctrl-C."""
    import signal
    import threading

    from service.stack import LocalStack, StackOptions

    options = StackOptions(
        data_dir=data_dir, tritons=tritons, workers=workers, http_port=port, grpc_port=grpc_port,
        model_repo=model_repo, config=config,
        checkpoint=_resolve_checkpoint(config, checkpoint), device=device,
    )  # fmt: skip
    try:
        running = LocalStack(options).start()
    except RuntimeError as exc:
        fail(str(exc))
    typer.echo(f"stack ready: http {running.http_url}, grpc {running.grpc_target}, triton "
               f"{', '.join(t.url for t in running.tritons)}, logs {running.logs}; "
               "Ctrl-C stops it")  # fmt: skip
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        running.stop()
