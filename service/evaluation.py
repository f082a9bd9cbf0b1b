"""``isvos eval --run`` and training validation: whole sequences from their first-frame mask,
through the same loop as every other caller (``service.runner``)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from isvos.eval_data import list_sequences, read_frames, read_gt_masks
from isvos.processing import processing_size, resize_frame
from service.backends.base import Backend
from service.media.base import Frame
from service.media.masks import write_indexed_png
from service.runner import SessionPlan, prompted, run_session
from service.sinks import MemorySink


async def _array_frames(frames: Iterable[np.ndarray], size: tuple[int, int]):
    for index, image in enumerate(frames):
        yield Frame(index, None, image), resize_frame(image, size)


async def segment_arrays(
    backend: Backend, frames: Iterable[np.ndarray], first_labels: np.ndarray, short_side: int,
    memory_options: dict | None = None,
) -> list[np.ndarray]:  # fmt: skip
    """Label maps at the original size for every frame (frame 0 carries the masks)."""
    height, width = first_labels.shape
    psize = processing_size(height, width, short_side)
    plan = SessionPlan(uuid.uuid4().hex, (height, width), psize, dict(memory_options or {}))
    sink = MemorySink()
    source = prompted(_array_frames(frames, psize), {0: first_labels}, psize)
    await run_session(backend, plan, source, sink)
    return sink.in_order()


def segment_sequence(
    engine, frames: Iterable[np.ndarray], first_labels: np.ndarray, short_side: int,
    memory_options: dict | None = None,
) -> list[np.ndarray]:  # fmt: skip
    """``segment_arrays`` on an in-process engine, for callers that are not async. The
    engine steps on the calling thread, where the model was built or trained: one OpenMP
    thread team (``service.backends.caller_thread``)."""
    from service.backends.caller_thread import CallerThreadExecutor
    from service.backends.local import LocalBackend

    executor = CallerThreadExecutor()
    backend = LocalBackend(engine, executor=executor)
    try:
        return executor.run(
            lambda: asyncio.run(
                segment_arrays(backend, frames, first_labels, short_side, memory_options)
            )
        )
    finally:
        backend.shutdown()


def run_sequences(
    gt_root: Path,
    pred_root: Path,
    sequences: list[str] | None,
    *,
    method: str = "model",
    config: str = "lite",
    checkpoint: str | None = None,
    short_side: int | None = None,
) -> None:
    """Write ``pred_root/<seq>/<frame>.png`` for every sequence with ``method``."""
    names = sequences or list_sequences(gt_root)
    engine = None
    if method == "model":
        from isvos.config import get_config
        from isvos.engine import EagerRunner, Engine
        from isvos.model import build

        engine = Engine(EagerRunner(build(config, checkpoint)))
        short_side = short_side or get_config(config).default_short_side
    for name in names:
        gt = read_gt_masks(gt_root, name)
        if method == "model":
            predictions = segment_sequence(engine, read_frames(gt_root, name), gt[0], short_side)
        else:
            from isvos.baselines import run_baseline

            predictions = run_baseline(method, gt_root, name)
        out = Path(pred_root) / name
        out.mkdir(parents=True, exist_ok=True)
        for index, labels in enumerate(predictions):
            write_indexed_png(out / f"{index:05d}.png", labels)
