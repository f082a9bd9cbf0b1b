"""The procedural robustness clips: the right shapes, deterministic per seed, and masks that
are exact (in the flat rendering every pixel's colour names the sprite that painted it, and
the label there is that sprite's label)."""

from __future__ import annotations

import numpy as np
import pytest

from isvos.train.procedural import CASES, FLAT, FRAMES, HEIGHT, SCENES, WIDTH

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_case_has_exact_masks(name):
    make = CASES[name]
    frames, labels = make(np.random.default_rng(5))
    assert frames.shape == (FRAMES, HEIGHT, WIDTH, 3) and frames.dtype == np.uint8
    assert labels.shape == (FRAMES, HEIGHT, WIDTH) and labels.dtype == np.uint8
    again, again_labels = make(np.random.default_rng(5))
    np.testing.assert_array_equal(frames, again)
    np.testing.assert_array_equal(labels, again_labels)
    assert (labels[0] > 0).any()  # something to track from the first frame

    flat, flat_labels = make(np.random.default_rng(5), flat=True)
    np.testing.assert_array_equal(flat_labels, labels)  # the effects change pixels only
    painter = np.full(labels.shape, -1)
    for order, colour in enumerate(FLAT):
        painter[(flat == colour).all(-1)] = order
    assert (painter >= 0).all()  # every pixel is the background or one sprite
    # The sprites of the case's scene give each painter's label.
    scene, _ = SCENES[name]
    sprite_labels = np.array([0] + [s.label for s in scene(np.random.default_rng(5)).sprites])
    np.testing.assert_array_equal(labels, sprite_labels[painter])


def test_the_cases_cover_what_they_name():
    def visible(name, t, k=1):
        _, labels = CASES[name](np.random.default_rng(0))
        return int((labels[t] == k).sum())

    assert visible("occlusion", 21) == 0 < visible("occlusion", 39)  # hidden, then back
    assert visible("leaves_frame", 20) == 0 < visible("leaves_frame", 39)
    assert visible("small_object", 10) == 144
    assert visible("camera_zoom", 39) > 2.5 * visible("camera_zoom", 0)
    frames, _ = CASES["lighting"](np.random.default_rng(0))
    assert frames[20].mean() < 0.6 * frames[0].mean()


def test_training_clips_are_deterministic_with_every_object_in_the_first_frame():
    from isvos.train.procedural import training_clip

    for seed in range(12):
        frames, labels, count = training_clip(np.random.default_rng(seed), 3, 96, 3)
        again = training_clip(np.random.default_rng(seed), 3, 96, 3)
        np.testing.assert_array_equal(frames, again[0])
        np.testing.assert_array_equal(labels, again[1])
        assert frames.shape == (3, 96, 96, 3) and labels.shape == (3, 96, 96)
        assert set(np.unique(labels[0]).tolist()) == set(range(count + 1))
        assert set(np.unique(labels).tolist()) <= set(range(count + 1))


def test_the_training_source_mixes_procedural_clips_in():
    from isvos.train.loop import MixedSource, SyntheticSource, TrainOptions, make_source

    options = TrainOptions(crop_size=64, num_frames=3, procedural_fraction=0.5)
    source = make_source(options)
    assert isinstance(source, MixedSource) and isinstance(source.base, SyntheticSource)
    assert not isinstance(make_source(TrainOptions(crop_size=64)), MixedSource)
    rng = np.random.default_rng(0)
    clips = [source.sample(rng, step) for step in range(16)]
    assert all(c[0].shape == (3, 64, 64, 3) and c[2] >= 1 for c in clips)
    # The synthetic source paints every pixel with noise texture (no colour repeats much);
    # procedural clips have solid sprites, lines or flat backgrounds (one colour covers a
    # large area).
    largest = [np.unique(c[0][0].reshape(-1, 3), axis=0, return_counts=True)[1].max()
               for c in clips]  # fmt: skip
    procedural = [count > 0.02 * 64 * 64 for count in largest]
    assert any(procedural) and not all(procedural)
