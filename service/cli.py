"""The ``isvos`` command line: segment, eval, export, train, pack.

Bad input ends with a one-line error and exit code 2 (media / mask problems) or 1 (other
refusals), never a traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from isvos.allocator import keep_freed_memory

# Before any thread exists: every thread then allocates from one arena (isvos.allocator).
keep_freed_memory()

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="ISVOS video object segmentation (embedded engine, evaluation, export, training).",
)

DEFAULT_CONFIG = "lite"
EXIT_BAD_INPUT = 2
EXIT_REFUSED = 1


def fail(message: str, code: int = EXIT_REFUSED) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _resolve_checkpoint(config: str, checkpoint: str | None) -> str | None:
    from service.checkpoints import default_checkpoint

    if checkpoint:
        return checkpoint
    found = default_checkpoint(config)
    if found is None and config != "tiny":
        typer.secho(
            f"warning: no trained checkpoint ships for config {config!r}; the weights are "
            "random and the masks will be meaningless (pass --checkpoint)",
            fg=typer.colors.YELLOW,
            err=True,
        )
    return found


def _limits(max_frames: int | None, max_file_mb: float | None):
    import dataclasses

    from service.media.limits import MediaLimits

    limits = MediaLimits()
    if max_frames is not None:
        limits = dataclasses.replace(limits, max_frames=max_frames)
    if max_file_mb is not None:
        limits = dataclasses.replace(limits, max_file_bytes=int(max_file_mb * 1e6))
    return limits


def _set_threads(threads: int) -> None:
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


@app.command()
def segment(
    video: Annotated[
        Path, typer.Argument(help="Video file (mp4, mov, webm, mkv, avi) or frame folder")
    ],
    masks: Annotated[
        list[Path],
        typer.Option(
            "--masks", help="Indexed PNG, binary PNGs (repeat), a folder, or COCO RLE .json"
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Output folder")],
    config: Annotated[str, typer.Option(help="lite | paper-r50 | tiny")] = DEFAULT_CONFIG,
    checkpoint: Annotated[
        str | None, typer.Option(help="Checkpoint file (default: the shipped one)")
    ] = None,
    size: Annotated[
        int | None, typer.Option("--size", help="Processing short side in pixels")
    ] = None,
    device: Annotated[str, typer.Option(help="cpu | cuda")] = "cpu",
    overlay: Annotated[
        bool, typer.Option("--overlay", help="Also write overlay.mp4 and preview.png")
    ] = False,
    rle: Annotated[bool, typer.Option("--rle", help="Also write masks.json (COCO RLE)")] = False,
    start: Annotated[int, typer.Option(help="First frame to process")] = 0,
    end: Annotated[int | None, typer.Option(help="Stop before this frame")] = None,
    stride: Annotated[int, typer.Option(help="Process every N-th frame")] = 1,
    resize_masks: Annotated[
        bool, typer.Option("--resize-masks", help="Resize masks of another size to the video")
    ] = False,
    max_memory_frames: Annotated[int, typer.Option(help="Memory capacity in frames")] = 16,
    mem_every: Annotated[int, typer.Option(help="Memorise every N-th frame")] = 5,
    top_k: Annotated[int, typer.Option(help="Top-k of the memory read")] = 20,
    threads: Annotated[int, typer.Option(help="CPU threads (0 = all)")] = 0,
    max_frames: Annotated[int | None, typer.Option(help="Refuse videos with more frames")] = None,
    max_file_mb: Annotated[float | None, typer.Option(help="Refuse larger files (MB)")] = None,
    backend_name: Annotated[
        str, typer.Option("--backend", help="local (in-process engine) | triton")
    ] = "local",
    triton_url: Annotated[
        str, typer.Option("--triton-url", help="With --backend triton: gRPC HOST:PORT")
    ] = "127.0.0.1:8001",
) -> None:
    """Segment VIDEO from first-frame MASKS with the in-process engine (or a Triton server)."""
    from isvos.config import get_config
    from isvos.errors import IsvosError
    from service.segment import SegmentRequest

    try:
        model_config = get_config(config)
    except ValueError as exc:
        fail(str(exc), EXIT_BAD_INPUT)
    _set_threads(threads)
    request = SegmentRequest(
        video=video,
        masks=masks[0] if len(masks) == 1 else list(masks),
        out_dir=out,
        short_side=size or model_config.default_short_side,
        memory_options={
            "max_memory_frames": max_memory_frames,
            "mem_every": mem_every,
            "top_k": top_k,
        },
        overlay=overlay,
        rle=rle,
        start=start,
        end=end,
        stride=stride,
        resize_masks=resize_masks,
        limits=_limits(max_frames, max_file_mb),
        decode_threads=1 if backend_name == "local" and device == "cpu" else 0,
    )
    if not video.exists():
        fail(f"video {str(video)!r} does not exist", EXIT_BAD_INPUT)
    if backend_name not in ("local", "triton"):
        fail(f"unknown backend {backend_name!r}: local | triton", EXIT_BAD_INPUT)
    try:
        if backend_name == "triton":
            from service.backends.triton import TritonBackend

            backend = TritonBackend(triton_url)
        else:
            from service.backends.local import LocalBackend

            backend = LocalBackend.from_model(
                config, _resolve_checkpoint(config, checkpoint), device
            )
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    try:
        summary = _run_with_progress(backend, request)
    except IsvosError as exc:
        fail(f"[{exc.code}] {exc}", EXIT_BAD_INPUT)
    except ValueError as exc:  # any other refused argument
        fail(f"[invalid_argument] {exc}", EXIT_BAD_INPUT)
    typer.echo(
        f"{summary.frames} frames, objects {summary.objects}, "
        f"{summary.frames_per_second} frames/s -> {out}"
    )


def _run_with_progress(backend, request):
    """``segment_video`` under a progress bar (on a terminal); closes the backend."""
    import asyncio

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from service.segment import segment_video

    columns = [
        TextColumn("[bold]segment"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} frames"),
        TextColumn("{task.fields[fps]:.1f} fps"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, transient=False, disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task("segment", total=None, fps=0.0)

        def progress(report) -> None:
            fps = report.frames_written / max(report.elapsed_s, 1e-9)
            bar.update(task, completed=report.frames_written, total=report.frames_total, fps=fps)

        async def run():
            try:
                return await segment_video(backend, request, progress)
            finally:
                await backend.aclose()

        return asyncio.run(run())


@app.command("eval")
def evaluate(
    gt: Annotated[Path, typer.Option("--gt", help="Ground truth root (DAVIS or davis16 layout)")],
    pred: Annotated[Path, typer.Option("--pred", help="Predictions root (<seq>/00000.png ...)")],
    sequences: Annotated[
        list[str] | None, typer.Option("--sequences", help="Only these sequences")
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the results as JSON")
    ] = None,
    run: Annotated[
        bool, typer.Option("--run", help="First segment every sequence into --pred")
    ] = False,
    method: Annotated[
        str, typer.Option(help="With --run: model | copy_first_frame | optical_flow")
    ] = "model",
    config: Annotated[str, typer.Option(help="With --run: model config")] = DEFAULT_CONFIG,
    checkpoint: Annotated[str | None, typer.Option(help="With --run: checkpoint")] = None,
    size: Annotated[
        int | None, typer.Option("--size", help="With --run: processing short side")
    ] = None,
    threads: Annotated[int, typer.Option(help="CPU threads (0 = all)")] = 0,
) -> None:
    """J&F by the DAVIS semi-supervised protocol (first and last frames excluded)."""
    from isvos.eval_data import evaluate_folders, format_table

    _set_threads(threads)
    try:
        if run:
            from service.evaluation import run_sequences

            weights = _resolve_checkpoint(config, checkpoint) if method == "model" else None
            run_sequences(
                gt, pred, sequences, method=method, config=config, checkpoint=weights,
                short_side=size,
            )  # fmt: skip
        result = evaluate_folders(gt, pred, sequences)
    except ValueError as exc:
        fail(str(exc), EXIT_BAD_INPUT)
    typer.echo(format_table(result))
    if json_path is not None:
        serialisable = {k: v for k, v in result.items() if k != "sequence_results"}
        json_path.write_text(json.dumps(serialisable, indent=1, default=float))


@app.command()
def export(
    config: Annotated[str, typer.Option(help="lite | paper-r50 | tiny")] = DEFAULT_CONFIG,
    checkpoint: Annotated[
        str | None, typer.Option(help="Checkpoint (default: the shipped one)")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for the graphs and manifest")] = Path(
        "model_repo/isvos/1"
    ),
) -> None:
    """Write the TorchScript graphs and their manifest."""
    from isvos.export import export_model
    from isvos.model import build

    checkpoint = _resolve_checkpoint(config, checkpoint)
    try:
        model = build(config, checkpoint)
    except ValueError as exc:
        fail(str(exc), EXIT_BAD_INPUT)
    manifest = export_model(model, out, checkpoint=checkpoint)
    typer.echo(f"exported {config} to {manifest.parent}")


@app.command()
def train(
    config: Annotated[str, typer.Option(help="lite | paper-r50 | tiny")] = DEFAULT_CONFIG,
    data: Annotated[
        str, typer.Option(help="'synthetic' or a pack written by `isvos pack`")
    ] = "synthetic",
    out: Annotated[Path, typer.Option("--out", help="Run directory")] = Path("runs/lite"),
    resume: Annotated[bool, typer.Option("--resume", help="Continue from RUN_DIR/last.pt")] = False,
    device: Annotated[str, typer.Option(help="cpu | cuda")] = "cpu",
    steps: Annotated[int, typer.Option(help="Total optimiser steps")] = 10000,
    batch_size: Annotated[int, typer.Option(help="Clips per step")] = 4,
    lr: Annotated[float, typer.Option(help="Peak learning rate")] = 1e-4,
    crop_size: Annotated[int, typer.Option(help="Training crop side")] = 192,
    val: Annotated[
        list[str] | None, typer.Option("--val", help="Held-out sequences of the pack")
    ] = None,
    eval_every: Annotated[int, typer.Option(help="Steps between held-out J&F")] = 1000,
    max_seconds: Annotated[
        float, typer.Option(help="Stop after this many seconds (0 = no limit)")
    ] = 0.0,
    static_fraction: Annotated[
        float, typer.Option(help="Fraction of the steps on deformed static frames")
    ] = 0.0,
    init_checkpoint: Annotated[str, typer.Option(help="Start from these weights")] = "",
    threads: Annotated[int, typer.Option(help="CPU threads (0 = all)")] = 0,
) -> None:
    """Train a model (resumable at any moment with --resume)."""
    from isvos.train.loop import TrainOptions
    from isvos.train.loop import train as run_training

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    options = TrainOptions(
        config=config, data=data, out=str(out), steps=steps, batch_size=batch_size, lr=lr,
        crop_size=crop_size, device=device, val_sequences=list(val or []),
        eval_every=eval_every if val else 0, max_seconds=max_seconds, threads=threads,
        static_fraction=static_fraction, init_checkpoint=init_checkpoint,
    )  # fmt: skip
    evaluate_fn = None
    if val:
        from isvos.train.validate import validate_on_pack

        evaluate_fn = validate_on_pack

    def progress(step: int, record: dict) -> None:
        if step % 20 == 0 or "val_J&F" in record:
            typer.echo(json.dumps(record))

    run_training(options, resume=resume, evaluate=evaluate_fn, progress=progress)


@app.command()
def shard(
    checkpoint: Annotated[Path, typer.Argument(help="A model checkpoint file")],
    out: Annotated[Path, typer.Option("--out", help="Manifest to write (NAME.manifest.json)")],
    max_mb: Annotated[float, typer.Option(help="Largest shard in MB")] = 16.0,
) -> None:
    """Split a checkpoint into shards (for size-limited transfers); load the manifest as usual."""
    from isvos.model.build import CheckpointError, load_checkpoint_file, save_sharded

    if not out.name.endswith(".manifest.json"):
        fail("--out must end with .manifest.json", EXIT_BAD_INPUT)
    try:
        manifest = save_sharded(load_checkpoint_file(checkpoint), out, int(max_mb * 1e6))
    except CheckpointError as exc:
        fail(str(exc), EXIT_BAD_INPUT)
    typer.echo(f"wrote {manifest} and its shards")


@app.command()
def pack(
    src: Annotated[
        Path, typer.Argument(help="Dataset root (davis16, DAVIS or YouTube-VOS layout)")
    ],
    out: Annotated[Path, typer.Option("--out", help="Pack file to write")],
    short_side: Annotated[int, typer.Option(help="Short side of the packed frames")] = 240,
) -> None:
    """Write a compact pre-decoded training set (small enough to carry to a GPU machine)."""
    from isvos.train.data import pack_dataset

    try:
        path = pack_dataset(src, out, short_side=short_side)
    except ValueError as exc:
        fail(str(exc), EXIT_BAD_INPUT)
    typer.echo(f"packed {src} -> {path}")


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
) -> None:
    """Run a local Triton server (nvidia-pytriton's binary) on the model repository until Ctrl-C."""
    import signal
    import threading

    from service.triton_server import TritonStartError, start_local_triton

    parameters = {}
    for item in param or []:
        key, sep, value = item.partition("=")
        if not sep:
            fail(f"--param {item!r} is not KEY=VALUE", EXIT_BAD_INPUT)
        parameters[key] = value
    try:
        server = start_local_triton(
            model_repo, export_config=config, checkpoint=_resolve_checkpoint(config, checkpoint),
            host=host, grpc_port=grpc_port or None, http_port=http_port or None, metrics=True,
            metrics_port=metrics_port or None, device=device, parameters=parameters,
        )  # fmt: skip
    except (TritonStartError, ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    typer.echo(f"triton ready ({server.device}): grpc {server.url}, http {server.http_url}, "
               f"metrics {server.metrics_url}; Ctrl-C stops it")  # fmt: skip
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


def _settings(**overrides):
    """Settings from ``ISVOS_*`` variables, with the command line's overrides on top
    (nested keys as ``section__field``); a clear message when they are not valid."""
    from pydantic import ValidationError

    from service.settings import Settings

    nested: dict = {}
    for key, value in overrides.items():
        if value is None:
            continue
        section, _, field = key.partition("__")
        if field:
            nested.setdefault(section, {})[field] = value
        else:
            nested[key] = value
    try:
        return Settings(**nested)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        fail(f"invalid settings: {problems}", EXIT_BAD_INPUT)


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


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
