"""First-frame adaptation: only the mask decoder changes, deterministically for a seed, and
the model given is left alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from isvos.adapt import ADAPTED_PREFIX, AdaptOptions, adapt_to_first_frame
from isvos.model import build
from tests.conftest import TINY_CHECKPOINT

pytestmark = pytest.mark.timeout(120)


def _frame() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 120, (64, 96, 3)).astype(np.uint8)
    labels = np.zeros((64, 96), np.uint8)
    labels[16:40, 20:50] = 1
    labels[30:58, 60:88] = 2
    image[labels == 1] = (230, 40, 40)
    image[labels == 2] = (40, 230, 40)
    return image, labels


def test_adaptation_changes_only_the_decoder_and_is_deterministic():
    torch.set_num_threads(1)
    model = build("tiny", TINY_CHECKPOINT)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    image, labels = _frame()
    options = AdaptOptions(steps=3, lr=1e-3, seed=4)
    adapted = adapt_to_first_frame(model, image, labels, options)
    again = adapt_to_first_frame(model, image, labels, options)
    other_seed = adapt_to_first_frame(model, image, labels, AdaptOptions(steps=3, lr=1e-3, seed=5))

    for key, value in model.state_dict().items():
        assert value.equal(before[key]), f"the given model changed: {key}"
    changed = {k for k, v in adapted.state_dict().items() if not v.equal(before[k])}
    assert changed and all(k.startswith(ADAPTED_PREFIX) for k in changed), changed
    for key, value in adapted.state_dict().items():
        assert value.equal(again.state_dict()[key]), f"not deterministic: {key}"
    assert any(not v.equal(adapted.state_dict()[k]) for k, v in other_seed.state_dict().items())
    assert not adapted.training and not any(p.requires_grad for p in adapted.parameters())


def test_adaptation_refuses_what_it_cannot_learn_from():
    model = build("tiny", TINY_CHECKPOINT)
    image, labels = _frame()
    with pytest.raises(ValueError, match="at least one object"):
        adapt_to_first_frame(model, image, np.zeros_like(labels))
    with pytest.raises(ValueError):
        AdaptOptions(steps=0)


def test_the_adaptation_clips_keep_each_object_its_first_frame_id():
    """Frame 0 is the first frame itself; in the deformed copies each id still covers the
    object that had it (its colour), whatever order the objects come in."""
    from isvos.adapt import _clips

    image, labels = _frame()
    colours = {1: (230, 40, 40), 2: (40, 230, 40)}
    for seed in range(6):
        frames, targets, counts = _clips(image, labels, np.random.default_rng(seed),
                                         AdaptOptions(batch_size=3, num_frames=3))  # fmt: skip
        assert counts == [2, 2, 2]
        pixels = (frames * 255).round().byte().permute(0, 1, 3, 4, 2).numpy()
        np.testing.assert_array_equal(pixels[:, 0], np.broadcast_to(image, pixels[:, 0].shape))
        for k, colour in colours.items():
            inside = targets.numpy() == k
            share = (np.abs(pixels[inside].astype(int) - colour).max(-1) < 30).mean()
            assert share > 0.9, (seed, k, share)  # bilinear edges aside, the object's colour
