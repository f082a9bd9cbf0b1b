"""Fixtures: tiny synthetic datasets in the DAVIS and YouTube-VOS folder layouts."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

DAVIS16 = Path("/work/shared/data/davis16/train")


def _write_sequence(
    root: Path, seq: str, rng: np.random.Generator, num_frames: int, num_objects: int,
    annotate_every: int = 1, sub: str = "",
) -> None:  # fmt: skip
    h, w = 72, 112
    img_dir = root / "JPEGImages" / sub / seq
    ann_dir = root / "Annotations" / sub / seq
    img_dir.mkdir(parents=True)
    ann_dir.mkdir(parents=True)
    yy, xx = np.mgrid[0:h, 0:w]
    small = rng.uniform(0, 255, (h // 8, w // 8, 3)).astype(np.float32)
    background = np.clip(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC), 0, 255)
    background = background.astype(np.uint8)
    centres = rng.uniform([20, 25], [h - 20, w - 25], (num_objects, 2))
    speeds = rng.uniform(-1.5, 1.5, (num_objects, 2))
    colours = rng.integers(0, 256, (num_objects, 3))
    palette = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [0] * (256 * 3 - 12)
    for t in range(num_frames):
        image, label = background.copy(), np.zeros((h, w), np.uint8)
        for k in range(num_objects):
            cy, cx = centres[k] + speeds[k] * t
            inside = ((yy - cy) / 12) ** 2 + ((xx - cx) / 16) ** 2 <= 1
            image[inside], label[inside] = colours[k], k + 1
        cv2.imwrite(str(img_dir / f"{t:05d}.jpg"), image[..., ::-1])
        if t % annotate_every == 0:
            png = Image.fromarray(label, mode="P")
            png.putpalette(palette)
            png.save(ann_dir / f"{t:05d}.png")


@pytest.fixture(scope="session")
def davis_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DAVIS layout (with the 480p level): 3 sequences, dense masks, 1-2 objects."""
    root = tmp_path_factory.mktemp("davis")
    rng = np.random.default_rng(1)
    for i, (n, k) in enumerate([(12, 2), (10, 1), (14, 2)]):
        _write_sequence(root, f"seq{i}", rng, n, k, sub="480p")
    return root


@pytest.fixture(scope="session")
def ytvos_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """YouTube-VOS layout: every frame as JPEG, annotations on every 5th frame."""
    root = tmp_path_factory.mktemp("ytvos")
    rng = np.random.default_rng(2)
    for i in range(2):
        _write_sequence(root, f"vid{i}", rng, 31, 2, annotate_every=5)
    return root


@pytest.fixture(scope="session")
def davis_pack(davis_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from isvos.train.data import pack_dataset

    return pack_dataset(davis_root, tmp_path_factory.mktemp("packs") / "davis.pack", None)
