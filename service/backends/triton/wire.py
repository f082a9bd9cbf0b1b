"""Requests and responses of the Triton model ``isvos`` as tritonclient objects (no I/O).

The contract itself (tensor names, kinds, options) is ``isvos.triton_contract``.
"""

from __future__ import annotations

import json

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from isvos import triton_contract as C
from isvos.limits import MAX_OBJECT_ID

from ..base import BackendError, StepOutput

_NP_TO_TRITON = {
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int64): "INT64",
    np.dtype(np.object_): "BYTES",
}
# Transport failures worth retrying: the server restarts, a connection was cut (a call in
# flight on a dropped connection ends CANCELLED, though this client cancelled nothing).
_RETRYABLE_STATUS = ("StatusCode.UNAVAILABLE", "StatusCode.CANCELLED")


def masks_to_wire(
    masks: dict[int, np.ndarray], size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """{id: bool mask} -> (uint8 label map, int32 ids). Overlaps go to the later id."""
    labels = np.zeros(size, np.uint8)
    ids = []
    for object_id, mask in masks.items():
        object_id = int(object_id)
        if not 1 <= object_id <= MAX_OBJECT_ID:
            raise BackendError(
                "invalid_objects", f"object id {object_id} is outside 1..{MAX_OBJECT_ID}"
            )
        mask = np.asarray(mask)
        if mask.shape != tuple(size):
            raise BackendError(
                "invalid_objects", f"mask of object {object_id} is {mask.shape}, expected {size}"
            )
        labels[mask.astype(bool)] = object_id
        ids.append(object_id)
    return labels, np.asarray(ids, np.int32)


def step_fields(frame_index: int, image: np.ndarray, masks) -> dict:
    fields = {C.FRAME_INDEX: np.asarray([frame_index], np.int64), C.IMAGE: image}
    if masks:
        labels, ids = masks_to_wire(masks, tuple(image.shape[:2]))
        fields[C.MASKS] = labels
        fields[C.OBJECT_IDS] = ids
    return fields


def _input(name: str, array: np.ndarray):
    array = np.ascontiguousarray(array)[None]  # the batch dimension
    tensor = grpcclient.InferInput(name, list(array.shape), _NP_TO_TRITON[array.dtype])
    tensor.set_data_from_numpy(array)
    return tensor


def _bytes_input(name: str, data: bytes | str):
    value = data.encode() if isinstance(data, str) else data
    return _input(name, np.array([value], dtype=np.object_))


def build_inputs(kind: str, fields: dict) -> list:
    inputs = [_bytes_input(C.KIND, kind)]
    for name, value in fields.items():
        if value is None:
            continue
        if name in (C.OPTIONS, C.RECORD):
            inputs.append(_bytes_input(name, value))
        else:
            inputs.append(_input(name, value))
    return inputs


def decode_result(result) -> dict:
    """Outputs of a response (without batch dimension), its INFO as ``info`` and its
    RECORD_OUT bytes as ``record``."""
    out: dict = {}
    response = result.get_response()
    for tensor in response.outputs:
        array = result.as_numpy(tensor.name)
        out[tensor.name] = array[0] if array is not None else None
    info = out.get(C.INFO)
    out["info"] = json.loads(info.reshape(-1)[0]) if info is not None else {}
    record = out.get(C.RECORD_OUT)
    out["record"] = bytes(record.reshape(-1)[0]) if record is not None else None
    return out


def error_of(exc: InferenceServerException) -> BackendError:
    """A client exception as a coded error (transport statuses first, then the model's)."""
    status = str(exc.status() or "")
    message = exc.message() or str(exc)
    if status in _RETRYABLE_STATUS:
        return BackendError("unavailable", message)
    if status == "StatusCode.DEADLINE_EXCEEDED":
        return BackendError("deadline_exceeded", message)
    code, text = C.parse_error(message)
    if code == "internal" and status == "StatusCode.INVALID_ARGUMENT":
        code = "invalid_argument"  # refused by Triton itself (dtype, shape, missing input)
    return BackendError(code, text)


def step_output(out: dict, frame_index: int) -> StepOutput:
    probabilities = out.get(C.PROBABILITIES)
    labels = out.get(C.LABELS)
    objects = out.get(C.OBJECTS)
    if probabilities is None or labels is None or objects is None:
        raise BackendError("internal", f"step {frame_index}: the response lacks outputs")
    info = out["info"]
    return StepOutput(
        frame_index=int(info.get("frame_index", frame_index)),
        object_ids=[int(i) for i in objects],
        probabilities=probabilities.astype(np.float32),
        labels=labels,
        memorised=bool(info.get("memorised")),
        replayed=bool(info.get("replayed")),
    )
