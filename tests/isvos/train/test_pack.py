"""pack_dataset / PackedDataset: layouts, sizes, exact masks (spec §1.13 training data)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from isvos.eval_data import read_frames, read_label_png
from isvos.train.data import PackedDataset, pack_dataset

from .conftest import DAVIS16

pytestmark = pytest.mark.timeout(120)


@pytest.mark.skipif(not (DAVIS16 / "masks").is_dir(), reason="davis16 data not available")
def test_davis16_pack_round_trip(tmp_path: Path) -> None:
    seqs = sorted(p.name for p in (DAVIS16 / "masks").iterdir())[:2]
    out = pack_dataset(DAVIS16, tmp_path / "d16.pack", 240, seqs, max_frames=10)
    ds = PackedDataset(out)
    assert ds.sequences == seqs
    for seq in seqs:
        assert ds.num_frames(seq) == 10
        assert ds.size(seq) == (240, 427)
        assert ds.object_ids(seq) == [1]
        assert ds.info(seq)["source"] == "davis16-video"
        videos = read_frames(DAVIS16, seq)
        for i in (0, 9):
            src = read_label_png(DAVIS16 / "masks" / seq / f"{i:05d}.png")
            want = cv2.resize(src, (427, 240), interpolation=cv2.INTER_NEAREST)
            lab = ds.labels(seq, i)
            assert lab.dtype == np.uint8 and np.array_equal(lab, want)
        frame0 = cv2.resize(next(videos), (427, 240), interpolation=cv2.INTER_AREA)
        got = ds.frame(seq, 0)
        assert got.shape == (240, 427, 3) and got.dtype == np.uint8
        assert cv2.PSNR(got, frame0) > 30  # JPEG, RGB order
    index = json.loads((out / "index.json").read_text())
    assert index["short_side"] == 240 and set(index["sequences"]) == set(seqs)


def test_davis_folder_layout(davis_root: Path, davis_pack: Path) -> None:
    ds = PackedDataset(davis_pack)
    assert ds.sequences == ["seq0", "seq1", "seq2"]
    assert [ds.num_frames(s) for s in ds.sequences] == [12, 10, 14]
    assert ds.object_ids("seq0") == [1, 2] and ds.object_ids("seq1") == [1]
    assert ds.size("seq0") == (72, 112)
    for seq in ds.sequences:
        for i in range(ds.num_frames(seq)):
            src = read_label_png(davis_root / "Annotations/480p" / seq / f"{i:05d}.png")
            assert np.array_equal(ds.labels(seq, i), src)  # PNG round trip is exact
    src = cv2.imread(str(davis_root / "JPEGImages/480p/seq2/00003.jpg"))[..., ::-1].copy()
    assert cv2.PSNR(ds.frame("seq2", 3), src) > 30
    with pytest.raises(IndexError):
        ds.frame("seq1", 10)


def test_resize_and_subset_and_pickle(davis_root: Path, tmp_path: Path) -> None:
    out = pack_dataset(davis_root, tmp_path / "small", 48, ["seq1", "seq0"], max_frames=4)
    ds = PackedDataset(out)
    assert ds.sequences == ["seq1", "seq0"]
    assert ds.size("seq0") == (48, 75) and ds.frame("seq0", 0).shape == (48, 75, 3)
    src = read_label_png(davis_root / "Annotations/480p/seq0/00002.png")
    want = cv2.resize(src, (75, 48), interpolation=cv2.INTER_NEAREST)
    assert np.array_equal(ds.labels("seq0", 2), want)
    assert ds.num_frames("seq0") == 4
    sub = ds.subset(["seq0"])
    assert sub.sequences == ["seq0"] and "seq1" not in sub and len(sub) == 1
    with pytest.raises(KeyError):
        ds.subset(["nope"])
    clone = pickle.loads(pickle.dumps(sub))
    assert np.array_equal(clone.frame("seq0", 1), sub.frame("seq0", 1))


def test_youtube_vos_keeps_annotated_frames(ytvos_root: Path, tmp_path: Path) -> None:
    ds = PackedDataset(pack_dataset(ytvos_root, tmp_path / "yt", None))
    assert ds.sequences == ["vid0", "vid1"]
    info = ds.info("vid0")
    assert info["source"] == "youtube-vos" and info["frame_stride"] == 5
    assert ds.num_frames("vid0") == 7  # frames 0, 5, ..., 30
    assert info["frame_names"] == [f"{i:05d}" for i in range(0, 31, 5)]
    src = read_label_png(ytvos_root / "Annotations/vid1/00015.png")
    assert np.array_equal(ds.labels("vid1", 3), src)
    img = cv2.imread(str(ytvos_root / "JPEGImages/vid1/00015.jpg"))[..., ::-1].copy()
    assert cv2.PSNR(ds.frame("vid1", 3), img) > 30


def test_incomplete_pack_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        PackedDataset(tmp_path)


def test_data_modules_are_torch_free() -> None:
    import subprocess
    import sys

    code = "import sys, isvos.train.data, isvos.train.augment; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
