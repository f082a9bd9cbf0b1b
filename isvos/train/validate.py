"""Held-out J&F during training: the engine over packed validation sequences."""

from __future__ import annotations

import numpy as np

from isvos.engine import EagerRunner, Engine
from isvos.metrics import evaluate_dataset, evaluate_sequence
from isvos.model.network import ISVOS
from isvos.processing import (
    masks_from_labels,
    probabilities_to_labels,
    processing_size,
    resize_frame,
    resize_labels,
)


def segment_sequence(
    engine: Engine, frames: list[np.ndarray], first_labels: np.ndarray, short_side: int
) -> list[np.ndarray]:
    height, width = first_labels.shape
    psize = processing_size(height, width, short_side)
    session = engine.open_session(psize)
    predictions = []
    for index, frame in enumerate(frames):
        masks = masks_from_labels(resize_labels(first_labels, psize)) if index == 0 else None
        result = session.step(index, resize_frame(frame, psize), masks)
        predictions.append(
            probabilities_to_labels(result.probabilities, result.object_ids, (height, width))
        )
    session.close()
    return predictions


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
