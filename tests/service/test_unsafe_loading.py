"""No user data is ever unpickled: the service and the Triton model load nothing with pickle
or torch.load (session records are plain arrays, isvos.record), and the model's own
checkpoint loading is weights-only."""

from __future__ import annotations

import ast

from tests.conftest import REPO


def _calls(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names]
            module = getattr(node, "module", None) or ""
            yield node, " ".join([module, *names])


def test_no_pickle_or_torch_load_where_user_data_is_read():
    for folder in ("service", "model_repo"):
        for path in (REPO / folder).rglob("*.py"):
            for _, name in _calls(path):
                assert "pickle" not in name and "torch.load" not in name, (path, name)
    record = (REPO / "isvos" / "record.py").read_text()
    assert "pickle" not in record and "torch" not in record


def test_checkpoints_load_weights_only():
    for path in (REPO / "isvos").rglob("*.py"):
        for node, name in _calls(path):
            if name == "torch.load":
                keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
                assert keywords.get("weights_only") == "True", (path, ast.unparse(node))
