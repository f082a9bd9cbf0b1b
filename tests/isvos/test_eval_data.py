"""Tests for isvos.eval_data (readers, folder evaluation) and isvos.baselines."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from isvos.baselines import copy_first_frame, optical_flow_propagation, run_baseline
from isvos.eval_data import (
    evaluate_folders,
    format_table,
    list_sequences,
    read_frames,
    read_gt_masks,
    read_label_png,
    read_pred_masks,
)
from isvos.metrics import evaluate_sequence

pytestmark = pytest.mark.timeout(60)

PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [0, 0, 0] * 251 + [224, 224, 192]


def davis16_root() -> Path:
    """``../shared/data/davis16`` next to the repository root (skip the test when absent)."""
    repo_root = Path(__file__).resolve().parents[2]
    root = repo_root.parent / "shared" / "data" / "davis16"
    if not (root / "val" / "masks").is_dir():
        pytest.skip(f"DAVIS 2016 data not found at {root}")
    return root


def write_label_png(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(labels.astype(np.uint8))
    im.putpalette(PALETTE)
    im.save(path)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    a = cv2.GaussianBlur(rng.random(shape).astype(np.float32), (0, 0), sigma)
    return (a - a.min()) / (a.max() - a.min())


def moving_square_clip(
    n: int = 8, h: int = 96, w: int = 128, size: int = 28
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A textured square moving (3, 2) px per frame over a static textured background."""
    rng = np.random.default_rng(0)
    bg = (smooth_noise(rng, (h, w), 3.0) * 120).astype(np.uint8)
    tex = (135 + smooth_noise(rng, (size, size), 2.0) * 120).astype(np.uint8)
    frames, labels = [], []
    for t in range(n):
        img = bg.copy()
        lab = np.zeros((h, w), np.uint8)
        y, x = 30 + 2 * t, 10 + 3 * t
        img[y : y + size, x : x + size] = tex
        lab[y : y + size, x : x + size] = 1
        frames.append(np.repeat(img[..., None], 3, axis=2))
        labels.append(lab)
    return frames, labels


def test_modules_import_without_torch() -> None:
    code = "import sys, isvos.eval_data, isvos.baselines; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_read_davis16_blackswan() -> None:
    val = davis16_root() / "val"
    assert "blackswan" in list_sequences(val)
    gt = read_gt_masks(val, "blackswan")
    assert len(gt) == 50
    assert gt[0].shape == (480, 854) and gt[0].dtype == np.uint8
    assert set(np.unique(gt[0]).tolist()) == {0, 1}
    frames = list(itertools.islice(read_frames(val, "blackswan"), 5))
    assert len(frames) == 5
    assert frames[0].shape == (480, 854, 3) and frames[0].dtype == np.uint8
    preds = optical_flow_propagation(frames, gt[0])
    res = evaluate_sequence(preds, gt[:5])
    assert res["objects"][1]["J_stats"]["mean"] > 0.8


def test_evaluate_folders_gt_equals_pred(tmp_path: Path) -> None:
    gt_root, pred_root = tmp_path / "gt", tmp_path / "pred"
    rng = np.random.default_rng(1)
    for seq, n_obj in (("seq-a", 1), ("seq-b", 2)):
        for t in range(4):
            lab = np.zeros((24, 32), np.uint8)
            for k in range(1, n_obj + 1):
                y, x = rng.integers(0, 14), rng.integers(0, 22)
                lab[y : y + 8, x : x + 8] = k
            write_label_png(gt_root / "masks" / seq / f"{t:05d}.png", lab)
            write_label_png(pred_root / seq / f"{t:05d}.png", lab)
    assert list_sequences(gt_root) == ["seq-a", "seq-b"]
    assert np.array_equal(
        read_pred_masks(pred_root, "seq-b")[0], read_gt_masks(gt_root, "seq-b")[0]
    )
    res = evaluate_folders(gt_root, pred_root)
    assert res["J&F"] == 1.0 and res["J"] == 1.0 and res["F"] == 1.0
    assert res["num_objects"] >= 2
    table = format_table(res)
    assert "seq-a" in table and "seq-b" in table and "Overall" in table and "100.0" in table
    assert evaluate_folders(gt_root, pred_root, sequences=["seq-a"])["per_sequence"].keys() == {
        "seq-a"
    }


def test_evaluate_folders_errors(tmp_path: Path) -> None:
    lab = np.zeros((8, 8), np.uint8)
    lab[2:5, 2:5] = 1
    for t in range(3):
        write_label_png(tmp_path / "gt" / "masks" / "s" / f"{t:05d}.png", lab)
    for t in range(2):
        write_label_png(tmp_path / "pred" / "s" / f"{t:05d}.png", lab)
    with pytest.raises(ValueError, match="2 predicted masks but 3"):
        evaluate_folders(tmp_path / "gt", tmp_path / "pred")
    with pytest.raises(ValueError, match="not found"):
        read_pred_masks(tmp_path / "pred", "missing")
    with pytest.raises(ValueError, match="not found"):
        list_sequences(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="video for sequence"):
        read_frames(tmp_path / "gt", "s")


def test_grayscale_binary_png_is_read_as_object(tmp_path: Path) -> None:
    lab = np.zeros((8, 8), np.uint8)
    lab[2:5, 2:5] = 255
    Image.fromarray(lab, mode="L").save(tmp_path / "m.png")
    assert np.array_equal(read_label_png(tmp_path / "m.png"), (lab == 255).astype(np.uint8))


@pytest.mark.parametrize("level", ["480p", None])
def test_davis_layout_and_run_baseline(tmp_path: Path, level: str | None) -> None:
    frames, labels = moving_square_clip(n=5)
    sub = (lambda p: p / level) if level else (lambda p: p)
    for t, (img, lab) in enumerate(zip(frames, labels, strict=True)):
        jpg = sub(tmp_path / "JPEGImages") / "sq" / f"{t:05d}.jpg"
        jpg.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(jpg, quality=95)
        write_label_png(sub(tmp_path / "Annotations") / "sq" / f"{t:05d}.png", lab)
    assert list_sequences(tmp_path) == ["sq"]
    read = list(read_frames(tmp_path, "sq"))
    assert len(read) == 5 and read[0].shape == (96, 128, 3) and read[0].dtype == np.uint8
    copy = run_baseline("copy_first_frame", tmp_path, "sq")
    flow = run_baseline("optical_flow_propagation", tmp_path, "sq")
    assert len(copy) == len(flow) == 5
    j_copy = evaluate_sequence(copy, labels)["objects"][1]["J_stats"]["mean"]
    j_flow = evaluate_sequence(flow, labels)["objects"][1]["J_stats"]["mean"]
    assert j_flow > j_copy
    with pytest.raises(ValueError, match="unknown baseline"):
        run_baseline("nope", tmp_path, "sq")


def test_flow_tracking_beats_copying_first_frame() -> None:
    frames, labels = moving_square_clip(n=8)
    copy = copy_first_frame(frames, labels[0])
    flow = optical_flow_propagation(frames, labels[0])
    assert len(copy) == len(flow) == 8
    assert np.array_equal(flow[0], labels[0])
    r_copy = evaluate_sequence(copy, labels)["objects"][1]
    r_flow = evaluate_sequence(flow, labels)["objects"][1]
    assert r_flow["J_stats"]["mean"] > r_copy["J_stats"]["mean"] + 0.2
    assert r_flow["J_stats"]["mean"] > 0.8
    assert r_flow["F_stats"]["mean"] > r_copy["F_stats"]["mean"]


def test_baseline_shape_mismatch() -> None:
    frames, labels = moving_square_clip(n=2)
    with pytest.raises(ValueError, match="does not match"):
        optical_flow_propagation(frames, labels[0][:-1])
