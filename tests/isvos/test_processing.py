"""The torch-free processing module (DESIGN decision 2)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from isvos.processing import (
    labels_from_probabilities,
    masks_from_labels,
    probabilities_to_labels,
    processing_size,
    resize_frame,
    resize_labels,
)

pytestmark = pytest.mark.timeout(60)


def test_processing_size_keeps_aspect_and_short_side():
    assert processing_size(480, 854, 240) == (240, 427)
    assert processing_size(1080, 1920, 480) == (480, 853)
    assert processing_size(854, 480, 240) == (427, 240)  # portrait
    with pytest.raises(ValueError):
        processing_size(0, 10, 240)
    with pytest.raises(ValueError):
        processing_size(100, 100, 8)


def test_resize_frame_and_labels():
    frame = np.random.default_rng(0).integers(0, 255, (480, 854, 3), dtype=np.uint8)
    small = resize_frame(frame, (240, 427))
    assert small.shape == (240, 427, 3) and small.dtype == np.uint8
    labels = np.zeros((480, 854), np.uint8)
    labels[100:200, 100:300] = 3
    small_labels = resize_labels(labels, (240, 427))
    assert set(np.unique(small_labels)) == {0, 3}
    with pytest.raises(ValueError):
        resize_frame(frame[:, :, 0], (10, 10))


def test_probabilities_to_labels_at_original_size():
    probs = np.zeros((3, 24, 32), np.float32)
    probs[0] = 1.0
    probs[:, 4:12, 4:12] = [[[0.1]], [[0.8]], [[0.1]]]
    probs[:, 14:20, 20:30] = [[[0.2]], [[0.1]], [[0.7]]]
    ids = [5, 9]
    full = probabilities_to_labels(probs, ids, (96, 128))
    assert full.shape == (96, 128) and full.dtype == np.uint8
    assert set(np.unique(full)) == {0, 5, 9}
    assert full[32, 32] == 5 and full[68, 100] == 9 and full[90, 5] == 0
    same = probabilities_to_labels(probs, ids, (24, 32))
    assert np.array_equal(same, labels_from_probabilities(probs, ids))
    with pytest.raises(ValueError):
        labels_from_probabilities(probs, [1])


def test_masks_from_labels():
    labels = np.array([[0, 1], [2, 2]], np.uint8)
    masks = masks_from_labels(labels)
    assert sorted(masks) == [1, 2] and masks[2].sum() == 2


def test_imports_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import isvos.processing, isvos.metrics, isvos.config\n"
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


@pytest.mark.parametrize("ids", [[1], [4], [4, 9, 200]])
def test_upsampled_labels_equal_argmax_of_upsampled_probabilities(ids):
    import cv2

    probs = np.random.default_rng(ids[0]).random((len(ids) + 1, 30, 53)).astype(np.float32)
    reference = np.argmax(np.stack([cv2.resize(p, (107, 61)) for p in probs]), 0)
    lookup = np.array([0, *ids], np.uint8)
    assert np.array_equal(probabilities_to_labels(probs, ids, (61, 107)), lookup[reference])


@pytest.mark.parametrize("ids", [[1], [7], [2, 5]])
def test_labels_from_probabilities_is_the_argmax_with_ties_to_the_background(ids):
    probs = np.random.default_rng(len(ids)).random((len(ids) + 1, 9, 11)).astype(np.float32)
    probs[:, 0, :] = 0.5  # a row of ties
    lookup = np.array([0, *ids], np.uint8)
    expected = lookup[np.argmax(probs, axis=0)]
    assert np.array_equal(labels_from_probabilities(probs, ids), expected)
    assert not labels_from_probabilities(probs, ids)[0].any()
