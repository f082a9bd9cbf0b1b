"""Shared fixtures: the committed tiny checkpoint (fitted on synthetic clips) and clips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ASSETS = Path(__file__).parent / "assets"
TINY_CHECKPOINT = ASSETS / "tiny_synthetic.pt"
REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "davis16"


@pytest.fixture(scope="session")
def tiny_model():
    import torch

    from isvos.model import build

    torch.set_num_threads(2)
    return build("tiny", TINY_CHECKPOINT)


@pytest.fixture()
def engine(tiny_model):
    from isvos.engine import EagerRunner, Engine

    return Engine(EagerRunner(tiny_model))


@pytest.fixture(scope="session")
def clip():
    """A 40-frame synthetic clip, 96x160, two moving objects."""
    from isvos.train.synthetic import synthetic_clip

    return synthetic_clip(np.random.default_rng(7), num_frames=40, num_objects=2, max_speed=1.5)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)
