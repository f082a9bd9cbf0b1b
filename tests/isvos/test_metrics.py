"""Tests for isvos.metrics (DAVIS J/F definitions, spec §5.2) on hand-computed cases."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from isvos.metrics import (
    boundary_map,
    db_eval_boundary,
    db_eval_iou,
    evaluate_dataset,
    evaluate_sequence,
    sequence_statistics,
    tolerance_radius,
)

pytestmark = pytest.mark.timeout(60)


def square(h: int, w: int, top: int, left: int, size: int, value: int = 1) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[top : top + size, left : left + size] = value
    return m


def test_imports_without_torch() -> None:
    code = "import sys, isvos.metrics; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_identical_masks_score_one() -> None:
    m = square(64, 64, 10, 12, 20)
    assert db_eval_iou(m, m) == 1.0
    assert db_eval_boundary(m, m) == 1.0


def test_shifted_square_exact_iou() -> None:
    gt = square(64, 64, 10, 10, 10)
    pred = square(64, 64, 10, 12, 10)  # 2 px to the right: 80 / 120
    assert db_eval_iou(pred, gt) == pytest.approx(2 / 3)
    pred = square(64, 64, 13, 13, 10)  # 3 px down and right: 49 / (200 - 49)
    assert db_eval_iou(pred, gt) == pytest.approx(49 / 151)


def test_empty_prediction_and_absent_object() -> None:
    gt = square(64, 64, 10, 10, 10)
    empty = np.zeros_like(gt)
    assert db_eval_iou(empty, gt) == 0.0
    assert db_eval_boundary(empty, gt) == 0.0  # P=1, R=0
    assert db_eval_boundary(gt, empty) == 0.0  # P=0, R=1
    assert db_eval_iou(empty, empty) == 1.0
    assert db_eval_boundary(empty, empty) == 1.0


def test_boundary_map_of_rectangle() -> None:
    h, w = 10, 20
    m = np.zeros((40, 50), np.uint8)
    m[5 : 5 + h, 7 : 7 + w] = 1
    b = boundary_map(m)
    assert b.dtype == bool
    # Object's last row + last column (h + w - 1), the background column left of it (h),
    # the row above it (w) and the top-left diagonal pixel (1): 2 * (h + w) in total.
    assert int(b.sum()) == 2 * (h + w)
    assert b[5 + h - 1, 7 : 7 + w].all()  # bottom row of the object
    assert b[5:15, 7 + w - 1].all()  # right column of the object
    assert b[4, 6]  # south-east neighbour is the object
    assert not b[5 + h, 7]  # below the object: its neighbours are background


def test_boundary_map_image_borders() -> None:
    full = np.ones((6, 8), bool)
    b = boundary_map(full)
    # DAVIS seg2bmap: last row compares with east only, last column with south only.
    assert not b.any()
    assert not boundary_map(np.zeros((6, 8), bool)).any()


def test_tolerance_radius() -> None:
    assert tolerance_radius((480, 854)) == 8  # ceil(0.008 * 979.6)
    assert tolerance_radius((100, 100)) == math.ceil(0.008 * math.hypot(100, 100)) == 2
    assert tolerance_radius((100, 100), bound_th=3) == 3


def test_boundary_f_tolerance() -> None:
    h, w = 480, 854  # radius 8
    gt = square(h, w, 100, 100, 120)
    assert db_eval_boundary(square(h, w, 100, 108, 120), gt) == 1.0
    assert db_eval_boundary(square(h, w, 108, 100, 120), gt) == 1.0
    beyond = db_eval_boundary(square(h, w, 100, 109, 120), gt)
    assert 0.0 < beyond < 1.0
    assert db_eval_boundary(square(h, w, 100, 109, 120), gt, bound_th=9) == 1.0


def test_void_pixels_excluded() -> None:
    gt = square(64, 64, 10, 10, 10)
    void = np.zeros((64, 64), bool)
    void[40:60, 40:60] = True
    pred = gt.copy()
    pred[45:55, 45:55] = 1  # false positive, only inside void
    assert db_eval_iou(pred, gt) == pytest.approx(100 / 200)
    assert db_eval_iou(pred, gt, void) == 1.0
    assert db_eval_boundary(pred, gt) < 1.0
    assert db_eval_boundary(pred, gt, void) == 1.0


def test_sequence_statistics_hand_made() -> None:
    values = np.arange(9) / 8  # N = 9: DAVIS bins [0:3], [2:5], [4:7], [6:9]
    s = sequence_statistics(values)
    assert s["mean"] == pytest.approx(0.5)
    assert s["recall"] == pytest.approx(4 / 9)  # 5/8, 6/8, 7/8, 1 are > 0.5
    assert s["decay"] == pytest.approx(1 / 8 - 7 / 8)
    s = sequence_statistics(np.array([1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]))
    assert s["decay"] == pytest.approx(1.0)
    assert s["recall"] == pytest.approx(0.5)
    s = sequence_statistics(np.array([1.0, np.nan, 0.0]))
    assert s["mean"] == pytest.approx(0.5)
    assert all(math.isnan(v) for v in sequence_statistics(np.array([])).values())


def test_evaluate_sequence_excludes_first_and_last_frames() -> None:
    gt = [square(32, 32, 8, 8, 10) for _ in range(5)]
    pred = [g.copy() for g in gt]
    pred[0][:] = 0  # wrong only on the first and last frames
    pred[4][:] = 0
    res = evaluate_sequence(pred, gt)
    assert res["frames"] == [1, 2, 3]
    assert res["object_ids"] == [1]
    obj = res["objects"][1]
    assert obj["J"].tolist() == [1.0, 1.0, 1.0]
    assert obj["F"].tolist() == [1.0, 1.0, 1.0]
    assert obj["J_stats"]["mean"] == 1.0
    pred[2][:] = 0
    obj = evaluate_sequence(pred, gt)["objects"][1]
    assert obj["J"].tolist() == [1.0, 0.0, 1.0]
    assert obj["J_stats"]["mean"] == pytest.approx(2 / 3)


def test_evaluate_sequence_frame_mismatch() -> None:
    gt = [square(16, 16, 2, 2, 4) for _ in range(4)]
    with pytest.raises(ValueError, match="frame count"):
        evaluate_sequence(gt[:3], gt)


def test_evaluate_dataset_averages_over_objects() -> None:
    two = square(32, 32, 2, 2, 8, 1) + square(32, 32, 20, 20, 8, 2)
    gt_a = [two.copy() for _ in range(4)]
    void_frame = gt_a[1].copy()
    void_frame[0, 31] = 255
    gt_a[1] = void_frame
    pred_a = [(g == 1).astype(np.uint8) for g in gt_a]  # object 2 never predicted
    gt_b = [square(32, 32, 5, 5, 10) for _ in range(3)]
    res_a = evaluate_sequence(pred_a, gt_a)
    assert res_a["object_ids"] == [1, 2]
    assert res_a["objects"][2]["J"].tolist() == [0.0, 0.0]
    assert res_a["objects"][2]["F"].tolist() == [0.0, 0.0]
    out = evaluate_dataset({"a": res_a, "b": evaluate_sequence(gt_b, gt_b)})
    assert out["num_objects"] == 3
    assert out["J"] == pytest.approx(2 / 3)  # over objects, not sequences (0.75)
    assert out["F"] == pytest.approx(2 / 3)
    assert out["J&F"] == pytest.approx(2 / 3)
    assert out["J-Recall"] == pytest.approx(2 / 3)
    assert out["J-Decay"] == pytest.approx(0.0)
    assert set(out["per_object"]) == {"a_1", "a_2", "b_1"}
    assert out["per_object"]["a_2"]["J"] == 0.0
    assert out["per_sequence"]["a"]["J"] == pytest.approx(0.5)
    assert out["per_sequence"]["b"]["J&F"] == pytest.approx(1.0)
