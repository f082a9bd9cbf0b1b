"""ClipSampler, augmentation, compositing and static clips (spec §1.13, §1.17 XMem sampler)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from isvos.train.augment import AugmentConfig, augment_clip
from isvos.train.data import (
    Clip,
    ClipSampler,
    PackedClipSource,
    PackedDataset,
    composite_clip,
    max_skip_at,
    pack_dataset,
    sample_frame_indices,
    static_clip,
)

pytestmark = pytest.mark.timeout(120)


def _check_clip(clip: Clip, t: int, hw: tuple[int, int], max_objects: int) -> None:
    assert clip.frames.shape == (t, *hw, 3) and clip.frames.dtype == np.uint8
    assert clip.labels.shape == (t, *hw) and clip.labels.dtype == np.uint8
    assert 1 <= clip.num_objects <= max_objects
    ids = set(range(1, clip.num_objects + 1))
    assert set(np.unique(clip.labels[0]).tolist()) - {0} == ids  # all present in frame 0
    assert set(np.unique(clip.labels).tolist()) - {0} <= ids


def test_max_skip_schedule() -> None:
    got = [max_skip_at(s, 1000) for s in (0, 99, 100, 299, 300, 799, 800, 999)]
    assert got == [5, 5, 10, 10, 15, 15, 5, 5]
    assert max_skip_at(50, 100, values=(2, 4), fractions=(0.5,)) == 4
    with pytest.raises(ValueError):
        max_skip_at(0, 10, values=(1, 2), fractions=(0.1, 0.2))


def test_frame_indices_order_and_skip() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        length, t, skip = int(rng.integers(3, 40)), int(rng.integers(1, 4)), int(rng.integers(1, 9))
        idx = sample_frame_indices(rng, length, t, skip)
        gaps = np.diff(idx)
        assert len(idx) == t and 0 <= idx[0] and idx[-1] < length
        assert np.all(gaps >= 1) and np.all(gaps <= skip)
    with pytest.raises(ValueError):
        sample_frame_indices(rng, 2, 3, 5)


@pytest.mark.parametrize("crop", [(48, 48), (40, 56)])
def test_sampler_clips(davis_pack: Path, crop: tuple[int, int]) -> None:
    ds = PackedDataset(davis_pack)
    sampler = ClipSampler(ds, num_frames=4, max_skip=2, max_objects=3, crop_size=crop)
    rng = np.random.default_rng(3)
    composited = 0
    for _ in range(12):
        clip = sampler.sample(rng)
        _check_clip(clip, 4, crop, 3)
        gaps = np.diff(clip.frame_indices)
        assert np.all(gaps >= 1) and np.all(gaps <= 2)
        composited += "+" in clip.sequence
    assert composited > 0


def test_sampler_options(davis_pack: Path) -> None:
    ds = PackedDataset(davis_pack)
    rng = np.random.default_rng(4)
    single = ClipSampler(ds, num_frames=3, max_objects=1, crop_size=(32, 32))
    plain = ClipSampler(ds, num_frames=2, composite_prob=0.0, crop_size=(32, 32))
    sched = ClipSampler(ds, num_frames=3, max_skip=lambda s: 1 if s < 10 else 4, crop_size=(32, 32))
    for _ in range(8):
        assert single.sample(rng).num_objects == 1
        clip = plain.sample(rng)
        assert "+" not in clip.sequence and clip.num_objects == len(ds.object_ids(clip.sequence))
        assert np.all(np.diff(sched.sample(rng, step=0).frame_indices) == 1)
        assert np.all(np.diff(sched.sample(rng, step=20).frame_indices) <= 4)
    with pytest.raises(ValueError):
        ClipSampler(ds, num_frames=30)


def test_sampler_youtube_stride(ytvos_root: Path, tmp_path: Path) -> None:
    ds = PackedDataset(pack_dataset(ytvos_root, tmp_path / "yt", None))
    sampler = ClipSampler(ds, num_frames=3, max_skip=10, composite_prob=0.0, crop_size=(32, 32))
    rng = np.random.default_rng(5)
    for _ in range(10):
        assert np.all(np.diff(sampler.sample(rng).frame_indices) <= 2)  # 10 frames / stride 5


def test_determinism(davis_pack: Path) -> None:
    ds = PackedDataset(davis_pack)
    sampler = ClipSampler(ds, num_frames=3, crop_size=(40, 40))
    a = [sampler.sample(np.random.default_rng(9)) for _ in range(2)]
    b = sampler.sample(np.random.default_rng(9))
    for clip in a:
        assert np.array_equal(clip.frames, b.frames) and np.array_equal(clip.labels, b.labels)
        assert clip.frame_indices == b.frame_indices and clip.sequence == b.sequence
    image, labels = _coded_image()
    s1 = static_clip(image, labels, np.random.default_rng(2))
    s2 = static_clip(image, labels, np.random.default_rng(2))
    assert np.array_equal(s1.frames, s2.frames) and np.array_equal(s1.labels, s2.labels)


def test_augment_drops_lost_objects() -> None:
    frames = np.zeros((2, 60, 80, 3), np.uint8)
    labels = np.zeros((2, 60, 80), np.uint8)
    labels[:, 5:15, 5:15] = 4  # small object, often cropped away
    labels[:, 20:50, 20:70] = 7
    labels[1, 0:3, 0:3] = 9  # absent from frame 0: must become background
    rng = np.random.default_rng(0)
    for _ in range(20):
        f, lab, n = augment_clip(frames, labels, rng, AugmentConfig(crop_size=(24, 24)))
        assert f.shape == (2, 24, 24, 3) and lab.shape == (2, 24, 24)
        assert n in (1, 2) and set(np.unique(lab[0]).tolist()) == set(range(n + 1))
        assert lab.max() <= n
    f, lab, n = augment_clip(frames, labels, rng, AugmentConfig.resize_only((30, 40)))
    want = np.array([0, 0, 0, 0, 1, 0, 0, 2, 0, 0], np.uint8)[
        cv2.resize(labels[0], (40, 30), interpolation=cv2.INTER_NEAREST)
    ]
    assert n == 2 and (lab[0] == want).mean() > 0.95  # plain resize, ids 4, 7 -> 1, 2
    assert np.array_equal(f, np.zeros_like(f))  # no colour change


def _solid_clip(t: int, hw: tuple[int, int], colour, box, name: str) -> Clip:
    frames = np.empty((t, *hw, 3), np.uint8)
    frames[:] = colour
    labels = np.zeros((t, *hw), np.uint8)
    y0, y1, x0, x1 = box
    labels[:, y0:y1, x0:x1] = 1
    return Clip(frames, labels, 1, name, tuple(range(t)))


def test_composite_exact_with_transform() -> None:
    rng = np.random.default_rng(0)
    t, hw = 4, (64, 80)
    base_frames = rng.integers(0, 200, (t, *hw, 3)).astype(np.uint8)  # never pure green
    base_labels = np.zeros((t, *hw), np.uint8)
    base_labels[:, 2:30, 2:40] = 1
    base = Clip(base_frames, base_labels, 1, "base", (0, 2, 4, 6))
    other = _solid_clip(t, hw, (0, 255, 0), (24, 44, 30, 54), "other")
    for seed in range(10):
        out = composite_clip(base, other, np.random.default_rng(seed), max_objects=3)
        assert out.num_objects == 2 and out.sequence == "base+other"
        assert out.frame_indices == base.frame_indices
        pasted, kept = out.labels == 2, out.labels != 2
        assert pasted[0].any()
        assert np.all(out.frames[pasted] == (0, 255, 0))  # pasted pixels are the object's
        assert np.array_equal(out.frames[kept], base.frames[kept])  # elsewhere the base
        assert np.array_equal(out.labels == 1, (base.labels == 1) & kept)  # occlusion
        area = pasted.sum(axis=(1, 2)) / (20 * 24)
        assert np.all((area > 0.2) & (area < 1.5))  # moved/scaled, not lost or smeared
    full = composite_clip(base, other, rng, max_objects=1)
    assert full is base


def test_composite_mask_follows_pixels() -> None:
    """The pasted object's warped pixels (red on blue) agree with its warped mask."""
    t, hw = 3, (64, 64)
    base = _solid_clip(t, hw, (0, 0, 0), (40, 60, 40, 60), "base")
    other = _solid_clip(t, hw, (0, 0, 255), (16, 48, 16, 48), "other")
    other.frames[other.labels == 1] = (255, 0, 0)
    kernel = np.ones((5, 5), np.uint8)
    for seed in range(10):
        out = composite_clip(base, other, np.random.default_rng(seed))
        for k in range(t):
            inner = cv2.erode((out.labels[k] == 2).astype(np.uint8), kernel).astype(bool)
            assert np.all(out.frames[k][inner] == (255, 0, 0))
            red = np.all(out.frames[k] == (255, 0, 0), axis=-1)
            assert np.all(out.labels[k][red] == 2)


@pytest.mark.skipif(not Path("/work/shared/data/davis16/train/masks").is_dir(), reason="no data")
def test_composite_real_identity(tmp_path: Path) -> None:
    pack = pack_dataset("/work/shared/data/davis16/train", tmp_path / "p", 120, ["bear", "boat"],
                        max_frames=6)  # fmt: skip
    sampler = ClipSampler(PackedDataset(pack), num_frames=3, crop_size=(64, 64))
    rng = np.random.default_rng(1)
    base = sampler.sample_single(rng, 5, 1, exclude=["boat"])
    other = sampler.sample_single(rng, 5, 1, exclude=["bear"])
    out = composite_clip(base, other, rng, transform=False)
    pasted = other.labels == 1
    assert np.array_equal(out.frames[pasted], other.frames[pasted])
    assert np.array_equal(out.frames[~pasted], base.frames[~pasted])
    if out.num_objects == 2:
        assert np.array_equal(out.labels == 2, pasted)
        assert np.array_equal(out.labels == 1, (base.labels == 1) & ~pasted)


def _coded_image() -> tuple[np.ndarray, np.ndarray]:
    """Object 1 pure red, object 2 pure green, background pure blue."""
    labels = np.zeros((96, 128), np.uint8)
    cv2.circle(labels, (45, 50), 25, 1, -1)
    labels[20:70, 80:115] = 2
    image = np.zeros((96, 128, 3), np.uint8)
    image[labels == 0] = (0, 0, 255)
    image[labels == 1] = (255, 0, 0)
    image[labels == 2] = (0, 255, 0)
    return image, labels


@pytest.mark.parametrize("strong", [False, True], ids=["affine", "non-rigid+occluder"])
def test_static_clip_exact(strong: bool) -> None:
    """Every object's pixels are its own colour under its label; with the strong stage (a
    non-rigid warp per frame and an occluder) too: what the occluder covers is background."""
    image, labels = _coded_image()
    kernel = np.ones((5, 5), np.uint8)
    extra = {"elastic": 0.06, "occluder_prob": 1.0} if strong else {}
    for seed in range(6):
        clip = static_clip(image, labels, np.random.default_rng(seed), 3, fill=(0, 0, 0),
                           **extra)  # fmt: skip
        _check_clip(clip, 3, (96, 128), 3)
        colours = {}
        for t in range(3):
            for k in range(clip.num_objects + 1):
                inner = cv2.erode((clip.labels[t] == k).astype(np.uint8), kernel).astype(bool)
                px = clip.frames[t][inner]
                if k == 0:  # blue background or black fill (and their blends)
                    assert strong or np.all(px[:, :2] == 0)  # (an occluder can be any colour)
                    continue
                assert len(px) and np.all(px == px[0])  # one pure colour per object
                colours.setdefault(k, tuple(px[0]))
                assert colours[k] == tuple(px[0]) and colours[k] in ((255, 0, 0), (0, 255, 0))
        assert len(set(colours.values())) == len(colours)
        assert not np.array_equal(clip.labels[0], clip.labels[1])  # frames are warped
    if not strong:
        return
    plain = static_clip(image, labels, np.random.default_rng(0), 3, fill=(0, 0, 0),
                        elastic=0.06)  # fmt: skip
    occluded = static_clip(image, labels, np.random.default_rng(0), 3, fill=(0, 0, 0), **extra)
    assert (occluded.labels > 0).sum() < (plain.labels > 0).sum()  # the occluder hides some
    binary = (labels > 0).astype(np.uint8) * 255  # saliency-style 0/255 mask
    clip = static_clip(image, binary, np.random.default_rng(0), 3, augment=AugmentConfig())
    _check_clip(clip, 3, (240, 240), 1)


def test_training_loop_adapter(davis_pack: Path) -> None:
    options = SimpleNamespace(data=str(davis_pack), num_frames=3, crop_size=32, max_objects=2,
                              steps=100, val_sequences=["seq0"])  # fmt: skip
    source = PackedClipSource(options)
    assert "seq0" not in source.sampler.dataset
    frames, labels, n = source.sample(np.random.default_rng(0), 50)
    assert frames.shape == (3, 32, 32, 3) and labels.shape == (3, 32, 32) and 1 <= n <= 2


def test_packed_source_static_stage_gives_exact_deformed_clips(tmp_path):
    """The first static_fraction of the steps draws single frames warped into clips."""
    from types import SimpleNamespace

    from isvos.train.data import PackedClipSource, pack_dataset
    from isvos.train.synthetic import synthetic_clip

    root = tmp_path / "src"
    frames, labels = synthetic_clip(np.random.default_rng(1), num_frames=6, num_objects=1)
    from PIL import Image

    (root / "JPEGImages" / "seq").mkdir(parents=True)
    (root / "Annotations" / "seq").mkdir(parents=True)
    for i in range(6):
        Image.fromarray(frames[i]).save(root / "JPEGImages" / "seq" / f"{i:05d}.jpg")
        image = Image.fromarray(labels[i], mode="P")
        image.putpalette([0, 0, 0, 128, 0, 0] + [0] * 762)
        image.save(root / "Annotations" / "seq" / f"{i:05d}.png")
    pack = pack_dataset(root, tmp_path / "pack", short_side=96)
    options = SimpleNamespace(data=str(pack), steps=10, static_fraction=0.5, num_frames=3,
                              crop_size=64, max_objects=3, val_sequences=[])  # fmt: skip
    source = PackedClipSource(options)
    rng = np.random.default_rng(0)
    clip_frames, clip_labels, count = source.sample(rng, step=0)
    assert clip_frames.shape == (3, 64, 64, 3) and clip_labels.shape == (3, 64, 64)
    assert count == 1 and set(np.unique(clip_labels)) <= {0, 1}
    video = source.sample(rng, step=9)
    assert video[0].shape == (3, 64, 64, 3)
