"""Model commands: segment, eval, export, train, shard, pack."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from service.cli import (
    DEFAULT_CONFIG,
    EXIT_BAD_INPUT,
    _limits,
    _resolve_checkpoint,
    _set_threads,
    app,
    fail,
)


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
    preset: Annotated[
        str | None,
        typer.Option("--preset", help="fast | balanced | accurate (default: balanced)"),
    ] = None,
    size: Annotated[
        int | None, typer.Option("--size", help="Processing short side (default: the preset's)")
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
    max_memory_frames: Annotated[
        int | None, typer.Option(help="Memory capacity in frames (default: the preset's)")
    ] = None,
    mem_every: Annotated[
        int | None, typer.Option(help="Memorise every N-th frame (default: the preset's)")
    ] = None,
    top_k: Annotated[
        int | None, typer.Option(help="Top-k of the memory read (default: the preset's)")
    ] = None,
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
    from isvos.presets import resolve
    from service.segment import SegmentRequest

    try:
        model_config = get_config(config)
        short_side, memory = resolve(preset, model_config.default_short_side, short_side=size,
                                     memory={"max_memory_frames": max_memory_frames,
                                             "mem_every": mem_every, "top_k": top_k})  # fmt: skip
    except ValueError as exc:
        fail(str(exc), EXIT_BAD_INPUT)
    _set_threads(threads)
    request = SegmentRequest(
        video=video,
        masks=masks[0] if len(masks) == 1 else list(masks),
        out_dir=out,
        short_side=short_side,
        memory_options=memory,
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
    static_elastic: Annotated[
        float, typer.Option(help="Static stage: non-rigid warp (fraction of the short side)")
    ] = 0.0,
    static_occluder_prob: Annotated[
        float, typer.Option(help="Static stage: chance of an occluder crossing the clip")
    ] = 0.0,
    procedural_fraction: Annotated[
        float, typer.Option(help="Fraction of the clips drawn from the procedural generator")
    ] = 0.0,
    init_checkpoint: Annotated[str, typer.Option(help="Start from these weights")] = "",
    threads: Annotated[int, typer.Option(help="CPU threads (0 = all)")] = 0,
    crop_width: Annotated[int, typer.Option(help="Crop width (0: square crops)")] = 0,
    motion_blur_prob: Annotated[float, typer.Option(help="Per-frame motion blur chance")] = 0.0,
    noise_prob: Annotated[float, typer.Option(help="Per-frame sensor noise chance")] = 0.0,
    gamma: Annotated[float, typer.Option(help="Per-clip gamma range 1 +- this")] = 0.0,
    lookalike_prob: Annotated[
        float, typer.Option(help="Chance of a look-alike pair (a second instance as an object)")
    ] = 0.0,
    ema_decay: Annotated[
        float, typer.Option(help="Average the weights (e.g. 0.999; 0 = off)")
    ] = 0.0,
    fold: Annotated[
        str | None,
        typer.Option("--fold", help="K/N: hold out fold K (0-based) of N folds of the pack"),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
) -> None:
    """Train a model (resumable at any moment with --resume)."""
    from isvos.train.loop import TrainOptions
    from isvos.train.loop import train as run_training

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    held_out = list(val or [])
    if fold is not None:
        held_out += _fold_of(data, fold)
    try:
        options = TrainOptions(
            config=config, data=data, out=str(out), steps=steps, batch_size=batch_size, lr=lr,
            crop_size=crop_size, device=device, val_sequences=held_out,
            eval_every=eval_every if held_out else 0, max_seconds=max_seconds,
            threads=threads, static_fraction=static_fraction, init_checkpoint=init_checkpoint,
            procedural_fraction=procedural_fraction, crop_width=crop_width,
            motion_blur_prob=motion_blur_prob, noise_prob=noise_prob, gamma=gamma,
            lookalike_prob=lookalike_prob, ema_decay=ema_decay, seed=seed,
            static_elastic=static_elastic, static_occluder_prob=static_occluder_prob,
        )  # fmt: skip
    except ValueError as exc:
        fail(str(exc), EXIT_BAD_INPUT)
    evaluate_fn = None
    if held_out:
        from isvos.train.validate import validate_on_pack

        evaluate_fn = validate_on_pack

    def progress(step: int, record: dict) -> None:
        if step % 20 == 0 or "val_J&F" in record:
            typer.echo(json.dumps(record))

    run_training(options, resume=resume, evaluate=evaluate_fn, progress=progress)


def _fold_of(data: str, fold: str) -> list[str]:
    """The sequences of pack ``data`` held out by ``--fold K/N``."""
    from isvos.train.data import PackedDataset
    from isvos.train.folds import fold_sequences

    try:
        k, n = (int(part) for part in fold.split("/"))
        return fold_sequences(PackedDataset(data).sequences, n, k)
    except ValueError as exc:
        fail(f"--fold {fold!r}: {exc} (expected K/N with 0 <= K < N, on a pack)", EXIT_BAD_INPUT)


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
