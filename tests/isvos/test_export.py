"""TorchScript export: scripted graphs against the eager modules (DESIGN decision 8)."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

from isvos.engine import EagerRunner, Engine, ScriptedRunner
from isvos.engine.runner import ExportMismatchError
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
    assert manifest["graphs"]["methods"] == [
        "encode_frame",
        "read_decode",
        "encode_value",
        "propose",
    ]
    graphs = (exported / manifest["graphs"]["file"]).read_bytes()
    assert manifest["graphs_sha256"] == hashlib.sha256(graphs).hexdigest()
    assert sorted(p.name for p in exported.iterdir()) == ["isvos.pt", "manifest.json"]


def copy_of(exported, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(exported, folder)
    return folder


def test_a_modified_graph_file_is_refused(exported, tmp_path):
    folder = copy_of(exported, tmp_path)
    ScriptedRunner(folder)  # the untouched copy loads
    data = bytearray((folder / "isvos.pt").read_bytes())
    data[len(data) // 2] ^= 0x01
    (folder / "isvos.pt").write_bytes(bytes(data))
    with pytest.raises(ExportMismatchError, match="does not match its manifest.*isvos export"):
        ScriptedRunner(folder)


def test_a_manifest_without_the_graph_hash_is_refused(exported, tmp_path):
    folder = copy_of(exported, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["graphs_sha256"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportMismatchError, match="no graphs_sha256.*isvos export"):
        ScriptedRunner(folder)


def test_missing_graphs_are_refused(exported, tmp_path):
    folder = copy_of(exported, tmp_path)
    (folder / "isvos.pt").unlink()
    with pytest.raises(FileNotFoundError, match="isvos export"):
        ScriptedRunner(folder)


def test_an_interrupted_export_leaves_the_previous_one_loadable(
    exported, tiny_model, tmp_path, monkeypatch
):
    """The new export fails while writing its manifest: the old files stay as they were."""
    import isvos.export
    from isvos.model import build

    folder = copy_of(exported, tmp_path)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    other = build("tiny")  # random weights: different graphs, different manifest

    def failing_dumps(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(isvos.export.json, "dumps", failing_dumps)
    with pytest.raises(OSError, match="disk full"):
        export_model(other, folder)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # no temporary left
    runner = ScriptedRunner(folder)
    assert runner.model_hash == EagerRunner(tiny_model).model_hash
    # Completed, the same export replaces both files.
    export_model(other, folder)
    assert ScriptedRunner(folder).model_hash == EagerRunner(other).model_hash
    assert sorted(p.name for p in folder.iterdir()) == ["isvos.pt", "manifest.json"]


def test_an_export_cut_off_between_the_renames_is_refused(exported, tmp_path, monkeypatch):
    """New graphs in place, the old manifest still there: the hash catches the mix."""
    import isvos.export
    from isvos.model import build

    folder = copy_of(exported, tmp_path)
    real_replace = isvos.export.os.replace

    def replace(src, dst):
        if str(dst).endswith("manifest.json"):
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(isvos.export.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        export_model(build("tiny"), folder)
    monkeypatch.undo()
    assert sorted(p.name for p in folder.iterdir()) == ["isvos.pt", "manifest.json"]
    with pytest.raises(ExportMismatchError, match="isvos export"):
        ScriptedRunner(folder)


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


def test_scripted_proposals_match_eager(exported, tiny_model, clip):
    frames, _ = clip
    eager = Engine(EagerRunner(tiny_model)).propose(frames[3])
    scripted = Engine(ScriptedRunner(exported)).propose(frames[3])
    assert eager[1].dtype == np.float16 and eager[1].shape[1:] == (24, 40)  # 96x160 / 4
    assert np.abs(eager[0] - scripted[0]).max() <= 1e-5
    assert np.abs(eager[1].astype(np.float32) - scripted[1]).max() <= 2e-3
