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
