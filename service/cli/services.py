"""Service commands: serve, gateway, grpc, worker, submit, stream."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from service.cli import (
    EXIT_BAD_INPUT,
    EXIT_REFUSED,
    _settings,
    app,
    fail,
)


@app.command()
def serve(
    port: Annotated[int | None, typer.Option(help="HTTP port (default 8080)")] = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default 1)")] = None,
    redis_url: Annotated[
        str | None, typer.Option("--redis-url", help="Redis URL (default: a private one)")
    ] = None,
    backend_name: Annotated[
        str | None, typer.Option("--backend", help="local | triton (default local)")
    ] = None,
    triton_url: Annotated[
        list[str] | None, typer.Option("--triton-url", help="Triton gRPC HOST:PORT (repeat)")
    ] = None,
    config: Annotated[str | None, typer.Option(help="Model config (default lite)")] = None,
    checkpoint: Annotated[str | None, typer.Option(help="Checkpoint of the local backend")] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Blobs and the private Redis")
    ] = None,
    grpc_port: Annotated[
        int | None, typer.Option("--grpc-port", help="Also serve gRPC streams on this port")
    ] = None,
) -> None:
    """Run the HTTP job service: gateway, workers and (by default) a private Redis."""
    from service.serve import serve as run

    run(_settings(
        port=port, host=host, workers=workers, redis__url=redis_url,
        backend__kind=backend_name, backend__triton_urls=triton_url, backend__config=config,
        backend__checkpoint=checkpoint, storage__data_dir=data_dir, grpc__port=grpc_port,
    ), grpc=grpc_port is not None)  # fmt: skip


@app.command()
def gateway(
    port: Annotated[int | None, typer.Option(help="HTTP port (default 8080; 0: any free)")] = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on")] = None,
    redis_url: Annotated[str | None, typer.Option("--redis-url", help="Redis URL")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="The blob store")] = None,
) -> None:
    """Run the HTTP gateway alone (workers and gRPC run as their own processes) until SIGTERM."""
    from service.serve import run_gateway

    settings = _settings(port=port, host=host, redis__url=redis_url, storage__data_dir=data_dir)
    if not settings.redis.url:
        fail("the gateway needs Redis: --redis-url or ISVOS_REDIS__URL", EXIT_BAD_INPUT)
    run_gateway(settings)


@app.command("grpc")
def grpc_server(
    port: Annotated[int | None, typer.Option(help="gRPC port (default 50051)")] = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on")] = None,
    redis_url: Annotated[
        str | None, typer.Option("--redis-url", help="Redis URL (default: a private one)")
    ] = None,
    backend_name: Annotated[str | None, typer.Option("--backend", help="local | triton")] = None,
    triton_url: Annotated[
        list[str] | None, typer.Option("--triton-url", help="Triton gRPC HOST:PORT")
    ] = None,
    config: Annotated[str | None, typer.Option(help="Model config (default lite)")] = None,
    checkpoint: Annotated[str | None, typer.Option(help="Checkpoint of the local backend")] = None,
    tls_cert: Annotated[
        str | None, typer.Option("--tls-cert", help="Server certificate (PEM)")
    ] = None,
    tls_key: Annotated[str | None, typer.Option("--tls-key", help="Server key (PEM)")] = None,
    tls_client_ca: Annotated[
        str | None, typer.Option("--tls-client-ca", help="CA of client certificates (mTLS)")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="The blob store")] = None,
) -> None:
    """Serve the gRPC Track stream (camera clients) until SIGTERM / Ctrl-C."""
    from service.serve import run_grpc

    run_grpc(_settings(
        grpc__port=port, grpc__host=host, redis__url=redis_url, backend__kind=backend_name,
        backend__triton_urls=triton_url, backend__config=config, backend__checkpoint=checkpoint,
        grpc__tls_cert=tls_cert, grpc__tls_key=tls_key, grpc__tls_client_ca=tls_client_ca,
        storage__data_dir=data_dir,
    ))  # fmt: skip


@app.command()
def worker(
    name: Annotated[str | None, typer.Option(help="Worker name (default: host-pid-random)")] = None,
    redis_url: Annotated[str | None, typer.Option("--redis-url", help="Redis URL")] = None,
    backend_name: Annotated[str | None, typer.Option("--backend", help="local | triton")] = None,
    triton_url: Annotated[
        list[str] | None, typer.Option("--triton-url", help="Triton gRPC HOST:PORT")
    ] = None,
    concurrency: Annotated[int | None, typer.Option(help="Jobs at once")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="The blob store")] = None,
) -> None:
    """Take jobs from Redis and run them until SIGTERM / Ctrl-C."""
    from service.serve import run_worker

    settings = _settings(
        redis__url=redis_url, backend__kind=backend_name, backend__triton_urls=triton_url,
        backend__concurrency=concurrency, storage__data_dir=data_dir,
    )  # fmt: skip
    if not settings.redis.url:
        fail("a worker needs Redis: --redis-url or ISVOS_REDIS__URL", EXIT_BAD_INPUT)
    run_worker(settings, name)


@app.command()
def submit(
    video: Annotated[Path, typer.Argument(help="Video file")],
    masks: Annotated[list[Path], typer.Option("--masks", help="Mask file(s), as for segment")],
    out: Annotated[Path, typer.Option("--out", help="Output folder")],
    server: Annotated[str, typer.Option(help="Service URL")] = "http://127.0.0.1:8080",
    api_key: Annotated[
        str | None, typer.Option("--api-key", envvar="ISVOS_API_KEY", help="Bearer API key")
    ] = None,
    size: Annotated[int | None, typer.Option("--size", help="Processing short side")] = None,
    overlay: Annotated[bool, typer.Option("--overlay", help="Also overlay.mp4, preview")] = False,
    rle: Annotated[bool, typer.Option("--rle", help="Also masks.json (COCO RLE)")] = False,
    start: Annotated[int, typer.Option(help="First frame to process")] = 0,
    end: Annotated[int | None, typer.Option(help="Stop before this frame")] = None,
    stride: Annotated[int, typer.Option(help="Process every N-th frame")] = 1,
) -> None:
    """Segment VIDEO on a running service (`isvos serve`) and write what `isvos segment`
    writes into OUT, with a progress bar fed by the job's events."""
    from isvos.errors import IsvosError
    from service.client import Client

    outputs = (
        ["png_zip"]
        + (["rle_json"] if rle else [])
        + (["overlay_mp4", "preview_png"] if overlay else [])
    )
    options = {"start": start, "end": end, "stride": stride, "outputs": outputs}
    if size:
        options["size"] = size
    try:
        with Client(server, api_key=api_key) as client:
            job = client.submit(video, masks, options)
            typer.echo(f"job {job['id']}: {job['status']}")
            final = _wait_with_progress(client, job["id"])
            if final["status"] != "succeeded":
                error = final.get("error") or {}
                fail(f"job {final['status']}: [{error.get('code')}] {error.get('message')}")
            client.download(job["id"], out, outputs)
    except IsvosError as exc:
        fail(f"[{exc.code}] {exc}", EXIT_BAD_INPUT if not exc.retryable else EXIT_REFUSED)
    typer.echo(f"{final['frames_done']} frames -> {out}")


@app.command("stream")
def stream_command(
    source: Annotated[str, typer.Argument(help="Video file, /dev/videoN or rtsp:// / http:// URL")],
    masks: Annotated[list[Path], typer.Option("--masks", help="Mask file(s), as for segment")],
    server: Annotated[str, typer.Option(help="gRPC server HOST:PORT")] = "127.0.0.1:50051",
    policy: Annotated[str, typer.Option(help="every_frame | latest")] = "every_frame",
    realtime: Annotated[
        bool, typer.Option("--realtime", help="Pace a file at its own frame rate")
    ] = False,
    out: Annotated[Path | None, typer.Option("--out", help="Write masks here")] = None,
    overlay: Annotated[
        bool, typer.Option("--overlay", help="Also overlay.mp4 (with --out)")
    ] = False,
    size: Annotated[int, typer.Option("--size", help="Processing short side (0: default)")] = 0,
    jpeg: Annotated[bool, typer.Option("--jpeg", help="Send JPEG instead of raw RGB")] = False,
    api_key: Annotated[
        str | None, typer.Option("--api-key", envvar="ISVOS_API_KEY", help="Bearer API key")
    ] = None,
    tls_ca: Annotated[Path | None, typer.Option("--tls-ca", help="Server CA (PEM): TLS")] = None,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="Client cert (mTLS)")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="Client key (mTLS)")] = None,
) -> None:
    """Stream SOURCE to a gRPC server and get masks back frame by frame (reconnects and
    resumes by itself)."""
    import asyncio

    from isvos.errors import IsvosError
    from service.media.masks import load_mask_input
    from service.rpc.camera import open_options, stream
    from service.rpc.client import TrackClient

    if policy not in ("every_frame", "latest"):
        fail(f"unknown policy {policy!r}: every_frame | latest", EXIT_BAD_INPUT)

    def prompts(frame_size):
        spec = masks[0] if len(masks) == 1 else list(masks)
        return load_mask_input(spec, frame_size)

    def read(path):
        return path.read_bytes() if path else None

    client = TrackClient(
        server, api_key=api_key, root_certificates=read(tls_ca),
        certificate_chain=read(tls_cert), private_key=read(tls_key),
        open_options=open_options(size, policy),
    )  # fmt: skip

    def status(report) -> None:
        if sys.stderr.isatty():
            sys.stderr.write("\r" + report.status() + "  ")
            sys.stderr.flush()

    async def run():
        async with client:
            return await stream(client, source, prompts, out, realtime=realtime,
                                overlay=overlay, encoding="jpeg" if jpeg else "rgb",
                                status=status)  # fmt: skip

    try:
        report = asyncio.run(run())
    except IsvosError as exc:
        fail(f"[{exc.code}] {exc}", EXIT_REFUSED if exc.retryable else EXIT_BAD_INPUT)
    typer.echo(("\n" if sys.stderr.isatty() else "") + report.status())


def _wait_with_progress(client, job_id: str) -> dict:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    columns = [TextColumn("[bold]job"), BarColumn(),
               TextColumn("{task.completed}/{task.total} frames"),
               TextColumn("{task.fields[fps]} fps"), TimeRemainingColumn()]  # fmt: skip
    with Progress(*columns, disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task("job", total=None, fps="-")

        def progress(event: dict) -> None:
            total = event.get("frames_total")
            bar.update(task, completed=int(event.get("frames_done", 0)),
                       total=int(total) if total else None, fps=event.get("fps", "-"))  # fmt: skip

        return client.wait(job_id, progress)


@app.command()
def probe(
    http: Annotated[str | None, typer.Option("--http", help="URL that must answer 2xx")] = None,
    grpc_target: Annotated[
        str | None, typer.Option("--grpc", help="HOST:PORT whose grpc.health.v1 says SERVING")
    ] = None,
    worker: Annotated[
        bool, typer.Option("--worker", help="A worker of this host renews its Redis heartbeat")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds per check")] = 5.0,
) -> None:
    """Health of a service process, for container health checks (exit 0: healthy)."""
    if not (http or grpc_target or worker):
        fail("give --http URL, --grpc HOST:PORT or --worker", EXIT_BAD_INPUT)
    if http:
        import httpx

        try:
            status = httpx.get(http, timeout=timeout).status_code
        except httpx.HTTPError as exc:
            fail(f"{http}: {exc}")
        if not 200 <= status < 300:
            fail(f"{http} answered {status}")
    if grpc_target:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(grpc_target) as channel:
            try:
                answer = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=timeout
                )
            except grpc.RpcError as exc:
                fail(f"{grpc_target}: {exc.code().name}")
        serving = health_pb2.HealthCheckResponse
        if answer.status != serving.SERVING:
            fail(f"{grpc_target}: {serving.ServingStatus.Name(answer.status)}")
    if worker:
        import socket

        import redis

        from service.keys import Keys

        settings = _settings()
        if not settings.redis.url:
            fail("--worker needs Redis: ISVOS_REDIS__URL", EXIT_BAD_INPUT)
        client = redis.Redis.from_url(settings.redis.url, socket_timeout=timeout)
        pattern = Keys(settings.redis.key_prefix).worker(f"{socket.gethostname()}-*")
        try:
            alive = next(iter(client.scan_iter(match=pattern, count=1000)), None)
        except redis.RedisError as exc:
            fail(f"redis: {exc}")
        finally:
            client.close()
        if alive is None:
            fail(f"no worker heartbeat matches {pattern}")
    typer.echo("healthy")
