"""Torch-free baseline segmenters to compare the ISVOS model against (DAVIS protocol, spec §5.2).

Each baseline takes a sequence's RGB frames and its first-frame label map and returns one
uint8 label map per frame (frame 0 is the given label map):

* ``copy_first_frame``: repeat the first-frame labels (a lower bound);
* ``optical_flow_propagation``: warp the previous prediction to each new frame with OpenCV
  DIS optical flow (backward flow current -> previous, nearest-neighbour remap).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import cv2
import numpy as np

from isvos.eval_data import read_frames, read_gt_masks
from isvos.metrics import VOID_LABEL

__all__ = ["BASELINES", "copy_first_frame", "optical_flow_propagation", "run_baseline"]


def _check_frame(frame: np.ndarray, labels: np.ndarray, index: int) -> np.ndarray:
    arr = np.asarray(frame)
    if arr.ndim not in (2, 3) or arr.shape[:2] != labels.shape:
        raise ValueError(
            f"frame {index}: shape {arr.shape} does not match the label map {labels.shape}"
        )
    return arr


def _to_gray(frame: np.ndarray) -> np.ndarray:
    arr = np.asarray(frame)
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        return np.ascontiguousarray(arr)
    if arr.shape[2] == 4:
        return cv2.cvtColor(arr, cv2.COLOR_RGBA2GRAY)
    return cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_RGB2GRAY)


def copy_first_frame(frames: Iterable[np.ndarray], first_labels: np.ndarray) -> list[np.ndarray]:
    """Predict the first-frame label map for every frame."""
    labels = np.asarray(first_labels, dtype=np.uint8)
    out: list[np.ndarray] = []
    for i, frame in enumerate(frames):
        _check_frame(frame, labels, i)
        out.append(labels.copy())
    return out


def optical_flow_propagation(
    frames: Iterable[np.ndarray], first_labels: np.ndarray
) -> list[np.ndarray]:
    """Propagate the labels frame by frame with DIS optical flow (medium preset).

    For each new frame, the flow from the current to the previous grayscale frame gives, for
    every current pixel, where it came from; the previous prediction is sampled there with
    nearest-neighbour interpolation (pixels mapped outside the image become background).
    """
    labels = np.ascontiguousarray(first_labels, dtype=np.uint8)
    h, w = labels.shape
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))

    out: list[np.ndarray] = []
    prev_gray: np.ndarray | None = None
    for i, frame in enumerate(frames):
        gray = _to_gray(_check_frame(frame, labels, i))
        if prev_gray is None:
            out.append(labels.copy())
        else:
            flow = dis.calc(gray, prev_gray, None)
            map_x = grid_x + flow[..., 0]
            map_y = grid_y + flow[..., 1]
            warped = cv2.remap(
                out[-1],
                map_x,
                map_y,
                interpolation=cv2.INTER_NEAREST,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=0,
            )
            out.append(warped)
        prev_gray = gray
    return out


BASELINES: dict[str, Callable[[Iterable[np.ndarray], np.ndarray], list[np.ndarray]]] = {
    "copy_first_frame": copy_first_frame,
    "copy": copy_first_frame,
    "optical_flow_propagation": optical_flow_propagation,
    "optical_flow": optical_flow_propagation,
    "flow": optical_flow_propagation,
}


def run_baseline(name: str, root: str | Path, seq: str) -> list[np.ndarray]:
    """Run baseline ``name`` on sequence ``seq`` of the dataset at ``root``.

    The first ground-truth frame (void set to background) initialises the baseline. Raises
    ``ValueError`` for an unknown name or when the frame and mask counts differ.
    """
    try:
        fn = BASELINES[name]
    except KeyError:
        raise ValueError(f"unknown baseline {name!r}; choose from {sorted(BASELINES)}") from None
    gt = read_gt_masks(root, seq)
    first = gt[0].copy()
    first[first == VOID_LABEL] = 0
    preds = fn(read_frames(root, seq), first)
    if len(preds) != len(gt):
        raise ValueError(f"sequence {seq!r}: {len(preds)} frames but {len(gt)} ground-truth masks")
    return preds
