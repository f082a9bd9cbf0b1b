"""Everything outside the network, shared by every path (DESIGN decision 2). Torch-free.

- A frame of any size is resized to the processing size (short side) before the engine.
- User masks are resized to the processing size (nearest neighbour).
- The engine's per-channel probabilities at processing size (background first) become a
  label map at the original size: bilinear upsampling of the probabilities, then argmax.

The ``local`` and ``triton`` backends both call these functions, so they agree by
construction and the worker and gateway need no torch.
"""

from __future__ import annotations

import cv2
import numpy as np

from isvos.limits import MIN_PROCESSING_SIDE

__all__ = [
    "MIN_PROCESSING_SIDE", "labels_from_probabilities", "masks_from_labels", "padded_size",
    "probabilities_to_labels", "processing_size", "resize_frame", "resize_labels",
]  # fmt: skip


def processing_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(h, w) with the short side equal to ``short_side`` and the aspect ratio kept."""
    if height <= 0 or width <= 0:
        raise ValueError(f"frame size must be positive, got {height}x{width}")
    if short_side < MIN_PROCESSING_SIDE:
        raise ValueError(f"processing short side must be at least {MIN_PROCESSING_SIDE}")
    scale = short_side / min(height, width)
    h = max(MIN_PROCESSING_SIDE, int(round(height * scale)))
    w = max(MIN_PROCESSING_SIDE, int(round(width * scale)))
    return h, w


def padded_size(size: tuple[int, int], divisor: int) -> tuple[int, int]:
    """(h, w) rounded up to multiples of ``divisor`` (the graphs pad to it, spec §1.3)."""
    return (-(-size[0] // divisor) * divisor, -(-size[1] // divisor) * divisor)


def resize_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """RGB uint8 [H, W, 3] -> [h, w, 3] (area filter when shrinking, bilinear when growing)."""
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected an RGB frame [H, W, 3], got shape {frame.shape}")
    h, w = size
    if frame.shape[:2] == (h, w):
        return np.ascontiguousarray(frame, dtype=np.uint8)
    shrinking = h * w < frame.shape[0] * frame.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(frame), (w, h), interpolation=interpolation)


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Label map [H, W] (uint8 ids) -> [h, w] by nearest neighbour."""
    h, w = size
    if labels.shape == (h, w):
        return np.ascontiguousarray(labels, dtype=np.uint8)
    # NEAREST_EXACT samples pixel centres (plain NEAREST takes each block's top-left pixel,
    # shifting masks up-left and dropping thin objects at the right and bottom edges).
    return cv2.resize(labels.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST_EXACT)


def masks_from_labels(
    labels: np.ndarray, object_ids: list[int] | None = None
) -> dict[int, np.ndarray]:
    """Label map -> {object id: bool mask}; ``object_ids`` defaults to the ids present."""
    ids = object_ids if object_ids is not None else [int(i) for i in np.unique(labels) if i != 0]
    return {int(i): labels == i for i in ids}


def labels_from_probabilities(probabilities: np.ndarray, object_ids: list[int]) -> np.ndarray:
    """[1 + O, h, w] probabilities (background first) -> uint8 label map of object ids."""
    if probabilities.shape[0] != len(object_ids) + 1:
        raise ValueError(
            f"{probabilities.shape[0]} probability channels for {len(object_ids)} objects"
        )
    if len(object_ids) == 1:  # the argmax of two channels (ties go to the background)
        return _label_where(np.greater(probabilities[1], probabilities[0]), object_ids[0])
    lookup = np.array([0, *object_ids], dtype=np.uint8)
    return lookup[np.argmax(probabilities, axis=0)]


def _label_where(inside: np.ndarray, object_id: int) -> np.ndarray:
    """Boolean mask -> uint8 label map with ``object_id`` inside (no copy for id 1)."""
    labels = inside.view(np.uint8)
    return labels if object_id == 1 else labels * np.uint8(object_id)


def probabilities_to_labels(
    probabilities: np.ndarray, object_ids: list[int], original_size: tuple[int, int]
) -> np.ndarray:
    """Probabilities at processing size -> label map at ``original_size`` (H, W).

    Each channel is upsampled bilinearly (half-pixel centres), then the argmax is taken at
    the original resolution, so object borders stay smooth at any output size.
    """
    height, width = original_size
    probs = np.asarray(probabilities, dtype=np.float32)
    if probs.shape[1:] == (height, width):
        return labels_from_probabilities(probs, object_ids)

    def upsample(plane: np.ndarray) -> np.ndarray:
        return cv2.resize(plane, (width, height), interpolation=cv2.INTER_LINEAR)

    if probs.shape[0] == 2:  # one object: a single plane decides (resize is linear)
        return _label_where(upsample(probs[1] - probs[0]) > 0, object_ids[0])
    best = upsample(probs[0])
    winner = np.zeros((height, width), dtype=np.uint8)
    # One channel at a time keeps peak memory at two full-size planes for any object count.
    for channel in range(1, probs.shape[0]):
        plane = upsample(probs[channel])
        better = plane > best
        np.copyto(best, plane, where=better)
        np.copyto(winner, np.uint8(object_ids[channel - 1]), where=better)
    return winner
