"""The one error table: every code the code base raises is in it, with valid statuses."""

from __future__ import annotations

import ast

import grpc
import pytest

from isvos.errors import ERRORS, IsvosError, parse_wire_error, wire_error
from tests.conftest import REPO

pytestmark = pytest.mark.timeout(60)

SOURCES = [*sorted((REPO / "isvos").rglob("*.py")), *sorted((REPO / "service").rglob("*.py")),
           REPO / "model_repo" / "isvos" / "1" / "model.py"]  # fmt: skip
# Calls whose first argument is a code, and those whose second is (message first).
CODE_FIRST = {"IsvosError", "MediaError", "BackendError", "RecordError"}
CODE_SECOND = {
    "EngineError", "FrameIndexError", "ObjectError", "RecordMismatchError",
    "SessionStateError", "AdmissionError", "SessionLookupError", "_refuse",
}  # fmt: skip


def _codes_in_source() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in SOURCES:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", getattr(node.func, "attr", ""))
                position = 0 if name in CODE_FIRST else 1 if name in CODE_SECOND else None
                args = node.args
                if position is not None and len(args) > position:
                    arg = args[position]
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                        found.setdefault(arg.value, []).append(f"{path.name}:{node.lineno}")
            if isinstance(node, ast.ClassDef) and node.name.endswith("Error"):
                for item in node.body:
                    target = item.targets[0] if isinstance(item, ast.Assign) else None
                    if getattr(target, "id", "") == "code" and isinstance(item.value, ast.Constant):
                        found.setdefault(item.value.value, []).append(f"{path.name}:{node.name}")
    return found


def test_every_raised_code_is_in_the_table():
    found = _codes_in_source()
    assert len(found) > 20  # the scan sees the code base
    unknown = {code: where for code, where in found.items() if code not in ERRORS}
    assert not unknown, unknown


def test_rows_are_valid():
    names = {status.name for status in grpc.StatusCode}
    for code, row in ERRORS.items():
        assert row.code == code and row.meaning
        assert 400 <= row.http_status <= 599, code
        assert row.grpc_status in names and row.grpc_status != "OK", code
    # The statuses clients branch on.
    assert ERRORS["not_found"].http_status == 404
    assert ERRORS["unavailable"].retryable and not ERRORS["invalid_argument"].retryable
    assert (
        ERRORS["invalid_record"].grpc_status
        == ERRORS["record_mismatch"].grpc_status
        == ("INVALID_ARGUMENT")
    )


def test_unknown_codes_cannot_be_raised():
    with pytest.raises(ValueError, match="not in"):
        IsvosError("no_such_code", "x")
    error = IsvosError("frame_gap", "frame 3 out of order")
    assert error.to_dict() == {"code": "frame_gap", "message": "frame 3 out of order"}
    assert not error.retryable and error.info.http_status == 409


def test_wire_errors_round_trip_for_every_code():
    for code in ERRORS:
        text = f"[StatusCode.INTERNAL] {wire_error(code, 'what: went wrong')}"
        assert parse_wire_error(text) == (code, "what: went wrong")
    assert parse_wire_error("no code here") is None
    assert parse_wire_error("xnot_found: glued to a word") is None


def test_media_engine_and_backend_errors_are_isvos_errors():
    from isvos.engine import FrameIndexError
    from service.backends.base import BackendError
    from service.media.errors import MediaError

    for error in (MediaError("mask_empty", "m"), FrameIndexError("f"),
                  BackendError("unavailable", "b")):  # fmt: skip
        assert isinstance(error, IsvosError) and error.code in ERRORS
    assert FrameIndexError("f").code == "frame_gap"
    assert isinstance(MediaError("mask_empty", "m"), ValueError)  # callers catching ValueError
