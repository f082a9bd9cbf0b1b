"""The session record: the small, exact description of a session (DESIGN decision 3).

The memory bank is derived state. For each memory slot the record keeps the frame index,
the frame at processing size and its processing-size label map (the hard masks the values
were encoded from) and which objects were encoded; plus counters, objects, pins and options,
and the identity of the weights. A session primed from it continues with identical outputs
on the same device, dtype and thread count.

Wire format (``to_bytes``): an uncompressed-header ``.npz`` archive (zlib-compressed
members) with a ``header`` JSON document and ``image_<i>`` / ``labels_<i>`` arrays.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field

import numpy as np

RECORD_FORMAT = "isvos-session-record"
RECORD_VERSION = 1


@dataclass
class SlotRecord:
    frame_index: int
    encoded_objects: tuple[int, ...]
    first: bool
    image: np.ndarray  # [h, w, 3] uint8 at processing size
    labels: np.ndarray  # [h, w] uint8 object ids at processing size


@dataclass
class SessionRecord:
    config_name: str
    architecture_hash: str
    model_hash: str
    options: dict
    processing_size: tuple[int, int]
    next_frame_index: int
    last_memorised_index: int
    object_ids: list[int]
    object_start_frames: dict[int, int]
    anchors: dict[int, int]
    removed_objects: list[int]
    slots: list[SlotRecord] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        header = {
            "format": RECORD_FORMAT,
            "version": RECORD_VERSION,
            "config_name": self.config_name,
            "architecture_hash": self.architecture_hash,
            "model_hash": self.model_hash,
            "options": self.options,
            "processing_size": list(self.processing_size),
            "next_frame_index": self.next_frame_index,
            "last_memorised_index": self.last_memorised_index,
            "object_ids": self.object_ids,
            "object_start_frames": {str(k): v for k, v in self.object_start_frames.items()},
            "anchors": {str(k): v for k, v in self.anchors.items()},
            "removed_objects": self.removed_objects,
            "slots": [
                {"frame_index": s.frame_index, "encoded_objects": list(s.encoded_objects),
                 "first": s.first}
                for s in self.slots
            ],
        }  # fmt: skip
        arrays = {"header": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)}
        for i, slot in enumerate(self.slots):
            arrays[f"image_{i}"] = slot.image
            arrays[f"labels_{i}"] = slot.labels
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> SessionRecord:
        try:
            archive = np.load(io.BytesIO(data), allow_pickle=False)
            header = json.loads(archive["header"].tobytes().decode())
        except Exception as exc:
            raise ValueError(f"not a session record: {exc}") from exc
        if header.get("format") != RECORD_FORMAT or header.get("version") != RECORD_VERSION:
            raise ValueError(
                f"unsupported session record {header.get('format')} v{header.get('version')}"
            )
        slots = [
            SlotRecord(
                frame_index=s["frame_index"],
                encoded_objects=tuple(s["encoded_objects"]),
                first=s["first"],
                image=archive[f"image_{i}"],
                labels=archive[f"labels_{i}"],
            )
            for i, s in enumerate(header["slots"])
        ]
        return cls(
            config_name=header["config_name"],
            architecture_hash=header["architecture_hash"],
            model_hash=header["model_hash"],
            options=header["options"],
            processing_size=tuple(header["processing_size"]),
            next_frame_index=header["next_frame_index"],
            last_memorised_index=header["last_memorised_index"],
            object_ids=list(header["object_ids"]),
            object_start_frames={int(k): v for k, v in header["object_start_frames"].items()},
            anchors={int(k): v for k, v in header["anchors"].items()},
            removed_objects=list(header["removed_objects"]),
            slots=slots,
        )
