"""``isvos eval --run``: segment every sequence of a dataset from its first-frame mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from isvos.eval_data import list_sequences, read_frames, read_gt_masks
from isvos.processing import (
    masks_from_labels,
    probabilities_to_labels,
    processing_size,
    resize_frame,
    resize_labels,
)
from service.backends.base import Backend
from service.media.masks import write_indexed_png


def segment_frames(
    backend: Backend, frames, first_labels: np.ndarray, short_side: int, name: str = "eval"
) -> list[np.ndarray]:
    """Run a backend over decoded frames from the first frame's label map."""
    height, width = first_labels.shape
    psize = processing_size(height, width, short_side)
    handle = backend.open(name, psize)
    results = []
    try:
        for index, frame in enumerate(frames):
            masks = masks_from_labels(resize_labels(first_labels, psize)) if index == 0 else None
            output = backend.step(handle, index, resize_frame(frame, psize), masks)
            results.append(
                probabilities_to_labels(output.probabilities, output.object_ids, (height, width))
            )
    finally:
        backend.close(handle)
    return results


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
    backend = None
    if method == "model":
        from isvos.config import get_config
        from service.backends.local import LocalBackend

        backend = LocalBackend.from_model(config, checkpoint)
        short_side = short_side or get_config(config).default_short_side
    for name in names:
        gt = read_gt_masks(gt_root, name)
        frames = list(read_frames(gt_root, name))
        if method == "model":
            predictions = segment_frames(backend, frames, gt[0], short_side, name)
        else:
            from isvos.baselines import run_baseline

            predictions = run_baseline(method, gt_root, name)
        out = Path(pred_root) / name
        out.mkdir(parents=True, exist_ok=True)
        for index, labels in enumerate(predictions):
            write_indexed_png(out / f"{index:05d}.png", labels)
