"""``isvos eval --run``: segment every sequence of a dataset from its first-frame mask."""

from __future__ import annotations

from pathlib import Path

from isvos.eval_data import list_sequences, read_frames, read_gt_masks
from service.media.masks import write_indexed_png


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
        from service.backends.local import LocalBackend

        engine = LocalBackend.from_model(config, checkpoint).engine
        short_side = short_side or get_config(config).default_short_side
    for name in names:
        gt = read_gt_masks(gt_root, name)
        if method == "model":
            from isvos.engine.sequence import segment_sequence

            predictions = segment_sequence(engine, read_frames(gt_root, name), gt[0], short_side)
        else:
            from isvos.baselines import run_baseline

            predictions = run_baseline(method, gt_root, name)
        out = Path(pred_root) / name
        out.mkdir(parents=True, exist_ok=True)
        for index, labels in enumerate(predictions):
            write_indexed_png(out / f"{index:05d}.png", labels)
