"""Round 2 of the recipe: folds, photometric extras, look-alike pairs, procedural clips of
any shape, named recipes and option checks."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from isvos.train.augment import AugmentConfig, Clip, augment_clip, composite_clip, motion_blur
from isvos.train.folds import fold_sequences
from isvos.train.loop import TrainOptions
from isvos.train.recipes import RECIPES, recipe_options

pytestmark = pytest.mark.timeout(120)


def test_folds_partition_the_sequences_the_same_way_every_time():
    names = [f"seq{i:02d}" for i in range(30)]
    folds = [fold_sequences(list(reversed(names)), 5, k) for k in range(5)]
    assert [len(f) for f in folds] == [6] * 5
    assert sorted(sum(folds, [])) == names  # disjoint and covering
    assert folds == [fold_sequences(names, 5, k) for k in range(5)]  # order of input irrelevant
    assert folds[0] != sorted(names)[:6]  # shuffled, not alphabetical blocks
    assert [len(fold_sequences(names[:7], 3, k)) for k in range(3)] == [3, 2, 2]
    for bad in ((5, 5), (1, 0), (40, 0)):
        with pytest.raises(ValueError):
            fold_sequences(names, *bad)


def test_photometric_extras_change_pixels_and_never_labels():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (3, 60, 80, 3)).astype(np.uint8)
    labels = np.zeros((3, 60, 80), np.uint8)
    labels[:, 10:40, 20:50] = 1
    plain = AugmentConfig(crop_size=(48, 64))
    extras = AugmentConfig(crop_size=(48, 64), motion_blur_prob=1.0, noise_prob=1.0, gamma=0.3)
    a = augment_clip(frames, labels, np.random.default_rng(3), plain)
    b = augment_clip(frames, labels, np.random.default_rng(3), extras)
    np.testing.assert_array_equal(a[1], b[1])  # same geometry, same labels
    assert a[2] == b[2] == 1
    assert np.abs(a[0].astype(int) - b[0].astype(int)).mean() > 2


def test_motion_blur_smears_along_its_direction_and_keeps_the_mean():
    image = np.zeros((41, 41, 3), np.uint8)
    image[20, 20] = 255
    horizontal = motion_blur(image, 9, 0.0)
    assert horizontal[20, 16:25, 0].min() > 0 and horizontal[16, 20, 0] == 0
    vertical = motion_blur(image, 9, 90.0)
    assert vertical[16:25, 20, 0].min() > 0 and vertical[20, 16, 0] == 0
    flat = np.full((20, 20, 3), 100, np.uint8)
    np.testing.assert_array_equal(motion_blur(flat, 7, 33.0), flat)
    assert motion_blur(image, 1, 0.0) is image


def test_a_lookalike_pair_is_two_exact_instances_of_one_object():
    rng = np.random.default_rng(0)
    t, hw = 3, (64, 80)
    frames = rng.integers(0, 200, (t, *hw, 3)).astype(np.uint8)  # never pure green
    labels = np.zeros((t, *hw), np.uint8)
    labels[:, 20:40, 25:50] = 1
    frames[labels == 1] = (0, 255, 0)
    clip = Clip(frames, labels, 1, "seq", (0, 1, 2))
    for seed in range(8):
        pair = composite_clip(clip, clip, np.random.default_rng(seed), max_objects=2,
                              scale_range=(0.7, 1.0), max_shift=0.35)  # fmt: skip
        assert pair.num_objects == 2 and pair.sequence == "seq+seq"
        assert (pair.labels[0] == 1).any() and (pair.labels[0] == 2).any()
        # The original keeps its own pixels where the copy does not cover it...
        assert np.all(pair.frames[pair.labels == 1] == (0, 255, 0))
        assert np.array_equal(pair.labels == 1, (labels == 1) & (pair.labels != 2))
        # ...and the copy's mask covers the copy's pixels (inside: bilinear edges aside).
        for t in range(3):
            inner = cv2.erode((pair.labels[t] == 2).astype(np.uint8), np.ones((3, 3), np.uint8))
            assert np.all(pair.frames[t][inner.astype(bool)] == (0, 255, 0))


def test_the_sampler_makes_lookalike_pairs(davis_pack: Path):
    from isvos.train.data import ClipSampler, PackedDataset

    sampler = ClipSampler(PackedDataset(davis_pack), num_frames=3, crop_size=(48, 48),
                          max_objects=2, composite_prob=0.0, lookalike_prob=1.0)  # fmt: skip
    rng = np.random.default_rng(0)
    clips = [sampler.sample(rng) for _ in range(10)]
    pairs = [c for c in clips if "+" in c.sequence]
    assert pairs and all(c.sequence.split("+")[0] == c.sequence.split("+")[1] for c in pairs)
    assert all(c.num_objects == 2 for c in pairs)


def test_procedural_training_clips_take_any_shape_with_exact_ids():
    from isvos.train.procedural import training_clip

    for seed in range(6):
        frames, labels, count = training_clip(np.random.default_rng(seed), 3, (64, 112), 3)
        assert frames.shape == (3, 64, 112, 3) and labels.shape == (3, 64, 112)
        assert set(np.unique(labels[0]).tolist()) == set(range(count + 1))


def test_recipes_resolve_to_checked_options():
    v1 = recipe_options("v1")
    assert (v1.lr, v1.crop_size, v1.procedural_fraction, v1.ema_decay) == (2e-4, 192, 0.0, 0.0)
    v2 = recipe_options("v2", steps=7)
    assert v2.steps == 7 and all(getattr(v2, k) == v for k, v in RECIPES["v2"].items())
    with pytest.raises(ValueError, match="unknown recipe"):
        recipe_options("v9")
    with pytest.raises(ValueError, match="not training options: colour"):
        recipe_options("v1", colour=1)
    for bad in ({"procedural_fraction": 1.5}, {"ema_decay": 1.0}, {"lookalike_prob": -0.1}):
        with pytest.raises(ValueError):
            TrainOptions(**bad)
    assert TrainOptions(crop_size=240, crop_width=432).crop_hw == (240, 432)


def test_rectangular_crops_keep_the_objects_shape():
    """A circle cropped to a 16:9 output stays round (the box's aspect follows the output)."""
    frames = np.zeros((1, 240, 427, 3), np.uint8)
    labels = np.zeros((1, 240, 427), np.uint8)
    cv2.circle(labels[0], (213, 120), 60, 1, -1)
    config = AugmentConfig(crop_size=(120, 216), frame_degrees=0.0, frame_shear=0.0)
    whole = 0
    for seed in range(10):
        _, out, count = augment_clip(frames, labels, np.random.default_rng(seed), config)
        ys, xs = np.nonzero(out[0])
        if count == 0 or min(ys.min(), xs.min()) == 0 or ys.max() == 119 or xs.max() == 215:
            continue  # cut by the crop's border: its extent says nothing
        whole += 1
        assert 0.7 < (np.ptp(xs) + 1) / (np.ptp(ys) + 1) < 1.45, seed
    assert whole >= 3


def test_synthetic_clips_take_the_crop_shape():
    from isvos.train.loop import SyntheticSource

    source = SyntheticSource(TrainOptions(crop_size=48, crop_width=80, num_frames=2))
    frames, labels, _ = source.sample(np.random.default_rng(0), 0)
    assert frames.shape == (2, 48, 80, 3) and labels.shape == (2, 48, 80)
