"""One whole sequence through a session, from its first-frame label map (evaluation).

Frames of any size go through ``isvos.processing`` exactly as the service does: resized to
the processing size, and probabilities turned back into label maps at the original size.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from isvos.processing import (
    masks_from_labels,
    probabilities_to_labels,
    processing_size,
    resize_frame,
    resize_labels,
)

from .session import Engine


def segment_sequence(
    engine: Engine, frames: Iterable[np.ndarray], first_labels: np.ndarray, short_side: int
) -> list[np.ndarray]:
    """Label maps at the original size for every frame (frame 0 carries the masks)."""
    height, width = first_labels.shape
    psize = processing_size(height, width, short_side)
    session = engine.open_session(psize)
    predictions = []
    try:
        for index, frame in enumerate(frames):
            masks = masks_from_labels(resize_labels(first_labels, psize)) if index == 0 else None
            result = session.step(index, resize_frame(frame, psize), masks)
            predictions.append(
                probabilities_to_labels(result.probabilities, result.object_ids, (height, width))
            )
    finally:
        session.close()
    return predictions
