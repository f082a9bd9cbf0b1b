"""Held-out J&F during training: the engine over packed validation sequences."""

from __future__ import annotations

from isvos.engine import EagerRunner, Engine
from isvos.metrics import evaluate_dataset, evaluate_sequence
from isvos.model.network import ISVOS
from service.evaluation import segment_sequence


def validate_on_pack(model: ISVOS, options) -> dict:
    """J&F of ``model`` on ``options.val_sequences`` of the pack ``options.data``."""
    from .data import PackedDataset

    dataset = PackedDataset(options.data)
    engine = Engine(EagerRunner(model))
    results = {}
    for name in options.val_sequences:
        count = dataset.num_frames(name)
        frames = [dataset.frame(name, i) for i in range(count)]
        labels = [dataset.labels(name, i) for i in range(count)]
        predictions = segment_sequence(engine, frames, labels[0], options.val_short_side)
        results[name] = evaluate_sequence(predictions, labels)
    summary = evaluate_dataset(results)
    return {"J&F": summary["J&F"], "J": summary["J"], "F": summary["F"]}
