"""DAVIS evaluation metrics: region similarity J and contour accuracy F (spec §5.2).

Torch-free (numpy + OpenCV). The definitions follow the official DAVIS evaluation code
(davis2017-evaluation ``metrics.py`` / ``evaluation.py`` / ``utils.db_statistics``):

* J: Jaccard index of the binary masks; empty union (object absent in both) gives 1.
* F: boundary F-measure; 1-pixel boundaries (``seg2bmap``), each dilated by a disk of radius
  ``ceil(0.008 * ||(H, W)||)``, precision/recall with the DAVIS edge cases.
* Per-object statistics over frames: mean (nanmean), recall (fraction > 0.5) and decay
  (mean of the first of 4 temporal bins minus mean of the last one).
* Semi-supervised protocol: the first and last frames are excluded; dataset scores average
  over all objects of all sequences; ``J&F = (J-Mean + F-Mean) / 2``.

Void pixels (label 255 in the ground truth) are excluded from J and masked out of both masks
before boundary extraction for F, as spec §5.2 states. (The public davis2017-evaluation code
sets 255 to background before it builds its void mask, so there void acts as background; the
two agree whenever the annotations have no void pixels, as in DAVIS 2017.)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

VOID_LABEL = 255
BOUND_TH = 0.008

__all__ = [
    "VOID_LABEL",
    "boundary_map",
    "db_eval_boundary",
    "db_eval_iou",
    "evaluate_dataset",
    "evaluate_sequence",
    "sequence_statistics",
    "tolerance_radius",
]


def _as_bool(mask: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D mask, got shape {arr.shape}")
    return arr.astype(bool)


def _check_shapes(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None) -> None:
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} != ground-truth shape {gt.shape}")
    if void is not None and void.shape != gt.shape:
        raise ValueError(f"void mask shape {void.shape} != ground-truth shape {gt.shape}")


def db_eval_iou(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None) -> float:
    """Region similarity J = |pred ∩ gt| / |pred ∪ gt| for one object in one frame.

    Pixels where ``void`` is true are ignored. An empty union gives 1.0.
    """
    p = _as_bool(pred, "pred")
    g = _as_bool(gt, "gt")
    v = None if void is None else _as_bool(void, "void")
    _check_shapes(p, g, v)
    valid = np.ones_like(g) if v is None else ~v
    inter = int(np.count_nonzero(p & g & valid))
    union = int(np.count_nonzero((p | g) & valid))
    if union == 0:
        return 1.0
    return inter / union


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """1-pixel-wide boundary of a binary mask (DAVIS ``seg2bmap``, same-size case).

    A pixel is a boundary pixel when it differs from its right (east), bottom (south) or
    bottom-right (south-east) neighbour; neighbours outside the image count as background.
    As in DAVIS, the last row only compares with the east neighbour, the last column only
    with the south neighbour, and the bottom-right pixel is never a boundary.
    """
    seg = _as_bool(mask, "mask")
    h, w = seg.shape
    if h == 0 or w == 0:
        return np.zeros_like(seg)
    east = np.zeros_like(seg)
    south = np.zeros_like(seg)
    south_east = np.zeros_like(seg)
    east[:, :-1] = seg[:, 1:]
    south[:-1, :] = seg[1:, :]
    south_east[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
    b[-1, :] = seg[-1, :] ^ east[-1, :]
    b[:, -1] = seg[:, -1] ^ south[:, -1]
    b[-1, -1] = False
    return b


def _disk(radius: int) -> np.ndarray:
    """Disk structuring element (x^2 + y^2 <= r^2), like ``skimage.morphology.disk``."""
    r = int(radius)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (xx * xx + yy * yy <= r * r).astype(np.uint8)


def tolerance_radius(shape: tuple[int, int], bound_th: float = BOUND_TH) -> int:
    """Boundary tolerance in pixels: ``ceil(bound_th * sqrt(H^2 + W^2))`` or ``bound_th``."""
    if bound_th >= 1:
        return int(bound_th)
    return int(math.ceil(bound_th * math.hypot(shape[0], shape[1])))


def db_eval_boundary(
    pred: np.ndarray,
    gt: np.ndarray,
    void: np.ndarray | None = None,
    bound_th: float = BOUND_TH,
) -> float:
    """Contour accuracy F for one object in one frame (DAVIS boundary F-measure).

    Edge cases: both boundaries empty -> 1; empty prediction vs non-empty ground truth ->
    P=1, R=0 -> 0; the reverse -> P=0, R=1 -> 0.
    """
    p = _as_bool(pred, "pred")
    g = _as_bool(gt, "gt")
    v = None if void is None else _as_bool(void, "void")
    _check_shapes(p, g, v)
    if v is not None:
        p = p & ~v
        g = g & ~v

    radius = tolerance_radius(g.shape, bound_th)
    fg_b = boundary_map(p)
    gt_b = boundary_map(g)
    n_fg = int(np.count_nonzero(fg_b))
    n_gt = int(np.count_nonzero(gt_b))

    if n_fg == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        kernel = _disk(radius)
        fg_dil = cv2.dilate(fg_b.astype(np.uint8), kernel).astype(bool)
        gt_dil = cv2.dilate(gt_b.astype(np.uint8), kernel).astype(bool)
        precision = np.count_nonzero(fg_b & gt_dil) / n_fg
        recall = np.count_nonzero(gt_b & fg_dil) / n_gt

    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def sequence_statistics(per_frame: np.ndarray) -> dict[str, float]:
    """Mean, recall and decay of one object's per-frame scores (DAVIS ``db_statistics``).

    mean = nanmean; recall = fraction of frames with score > 0.5; decay = nanmean of the
    first of 4 temporal bins minus nanmean of the last. The bins are DAVIS's: boundaries
    ``round(linspace(1, N, 5)) - 1`` with bin ``i`` = ``values[ids[i] : ids[i+1] + 1]``
    (adjacent bins share their boundary frame). DAVIS casts the boundaries to uint8, which
    wraps past 255 frames; integer indices are used here instead.
    An empty series gives NaN for all three.
    """
    values = np.asarray(per_frame, dtype=np.float64).ravel()
    n = values.size
    if n == 0:
        return {"mean": float("nan"), "recall": float("nan"), "decay": float("nan")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = float(np.nanmean(values))
        recall = float(np.mean(values > 0.5))
        ids = (np.round(np.linspace(1, n, 5) + 1e-10) - 1).astype(np.int64)
        bins = [values[ids[i] : ids[i + 1] + 1] for i in range(4)]
        decay = float(np.nanmean(bins[0]) - np.nanmean(bins[3]))
    return {"mean": mean, "recall": recall, "decay": decay}


def _default_object_ids(first_gt: np.ndarray) -> list[int]:
    """DAVIS convention: objects 1..max label of the first ground-truth frame (void ignored)."""
    labels = np.asarray(first_gt)
    labels = labels[labels != VOID_LABEL]
    top = int(labels.max()) if labels.size else 0
    return list(range(1, top + 1))


def evaluate_sequence(
    pred_labels: Sequence[np.ndarray],
    gt_labels: Sequence[np.ndarray],
    object_ids: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Per-object J and F of one sequence under the semi-supervised DAVIS protocol.

    ``pred_labels`` / ``gt_labels`` are per-frame label maps (0 = background, ``k`` = object
    ``k``, 255 = void in the ground truth). The first and last frames are excluded. Objects
    default to ``1..max(first GT frame)``; an object the prediction never labels is scored
    against an all-zero mask.

    Returns ``{"num_frames", "frames" (evaluated indices), "object_ids", "objects"}`` where
    ``objects[k] = {"J": array, "F": array, "J_stats": {...}, "F_stats": {...}}``.
    """
    if len(pred_labels) != len(gt_labels):
        raise ValueError(
            f"frame count mismatch: {len(pred_labels)} predicted vs {len(gt_labels)} ground truth"
        )
    n = len(gt_labels)
    if n == 0:
        raise ValueError("empty sequence: no ground-truth frames")
    ids = list(object_ids) if object_ids is not None else _default_object_ids(gt_labels[0])
    frames = list(range(1, n - 1))

    j_scores = {k: np.zeros(len(frames)) for k in ids}
    f_scores = {k: np.zeros(len(frames)) for k in ids}
    for col, t in enumerate(frames):
        gt = np.asarray(gt_labels[t])
        pred = np.asarray(pred_labels[t])
        if pred.shape != gt.shape:
            raise ValueError(
                f"frame {t}: prediction shape {pred.shape} != ground-truth shape {gt.shape}"
            )
        void = gt == VOID_LABEL
        has_void = bool(void.any())
        for k in ids:
            p = pred == k
            g = gt == k
            v = void if has_void else None
            j_scores[k][col] = db_eval_iou(p, g, v)
            f_scores[k][col] = db_eval_boundary(p, g, v)

    objects = {
        k: {
            "J": j_scores[k],
            "F": f_scores[k],
            "J_stats": sequence_statistics(j_scores[k]),
            "F_stats": sequence_statistics(f_scores[k]),
        }
        for k in ids
    }
    return {"num_frames": n, "frames": frames, "object_ids": ids, "objects": objects}


def _mean(values: list[float]) -> float:
    if not values:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        return float(np.nanmean(values))


def evaluate_dataset(results: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Aggregate ``evaluate_sequence`` outputs (keyed by sequence name) over all objects.

    Returns ``J&F``, ``J`` (J-Mean over all objects of all sequences), ``F`` (F-Mean),
    ``J-Recall``, ``J-Decay``, ``F-Recall``, ``F-Decay``, ``num_objects``, and the rows
    ``per_object`` (keyed ``f"{seq}_{objid}"``) and ``per_sequence`` (keyed by sequence; means
    over that sequence's objects), each row with ``J&F``, ``J`` and ``F``.
    """
    stats: dict[str, list[float]] = {k: [] for k in ("JM", "JR", "JD", "FM", "FR", "FD")}
    per_object: dict[str, dict[str, Any]] = {}
    per_sequence: dict[str, dict[str, Any]] = {}
    for seq, res in results.items():
        seq_j: list[float] = []
        seq_f: list[float] = []
        for k, obj in res["objects"].items():
            js, fs = obj["J_stats"], obj["F_stats"]
            stats["JM"].append(js["mean"])
            stats["JR"].append(js["recall"])
            stats["JD"].append(js["decay"])
            stats["FM"].append(fs["mean"])
            stats["FR"].append(fs["recall"])
            stats["FD"].append(fs["decay"])
            seq_j.append(js["mean"])
            seq_f.append(fs["mean"])
            per_object[f"{seq}_{k}"] = {
                "sequence": seq,
                "object_id": k,
                "J&F": (js["mean"] + fs["mean"]) / 2,
                "J": js["mean"],
                "F": fs["mean"],
                "J-Recall": js["recall"],
                "J-Decay": js["decay"],
                "F-Recall": fs["recall"],
                "F-Decay": fs["decay"],
            }
        sj, sf = _mean(seq_j), _mean(seq_f)
        per_sequence[seq] = {"J&F": (sj + sf) / 2, "J": sj, "F": sf, "num_objects": len(seq_j)}

    jm, fm = _mean(stats["JM"]), _mean(stats["FM"])
    return {
        "J&F": (jm + fm) / 2,
        "J": jm,
        "F": fm,
        "J-Recall": _mean(stats["JR"]),
        "J-Decay": _mean(stats["JD"]),
        "F-Recall": _mean(stats["FR"]),
        "F-Decay": _mean(stats["FD"]),
        "num_objects": len(stats["JM"]),
        "per_sequence": per_sequence,
        "per_object": per_object,
    }
