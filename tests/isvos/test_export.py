"""TorchScript export: scripted graphs against the eager modules (DESIGN decision 8)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from isvos.engine import EagerRunner, Engine, ScriptedRunner
from isvos.export import export_model

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def exported(tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    export_model(tiny_model, folder, checkpoint="tests/assets/tiny_synthetic.pt")
    return folder


def test_manifest(exported, tiny_model):
    from isvos.model import model_hash

    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["model_hash"] == model_hash(tiny_model)
    assert manifest["config"]["name"] == "tiny"
    assert manifest["graphs"]["methods"] == ["encode_frame", "read_decode", "encode_value"]


@pytest.mark.parametrize("size", [(77, 131), (100, 170)])  # unseen, not multiples of 32
@pytest.mark.parametrize("objects", [1, 3])
def test_scripted_matches_eager(exported, tiny_model, clip, size, objects):
    import cv2

    frames, labels = clip
    h, w = size
    frames = [cv2.resize(f, (w, h)) for f in frames[:16]]
    labels = [cv2.resize(x, (w, h), interpolation=cv2.INTER_NEAREST) for x in labels[:16]]
    first = {o: labels[0] == o for o in range(1, min(objects, 2) + 1)}
    added = {8: {3: labels[8] > 0}} if objects == 3 else {}
    eager = Engine(EagerRunner(tiny_model)).open_session(size)
    scripted_engine = Engine(ScriptedRunner(exported))
    assert scripted_engine.runner.model_hash == eager.runner.model_hash
    scripted = scripted_engine.open_session(size)
    for i, frame in enumerate(frames):
        masks = first if i == 0 else added.get(i)
        a = eager.step(i, frame, masks)
        b = scripted.step(i, frame, masks)
        assert np.array_equal(a.labels, b.labels), i
        assert np.abs(a.probabilities - b.probabilities).max() <= 1e-4
    assert len(a.object_ids) == objects
