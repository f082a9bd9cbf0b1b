"""COCO RLE JSON masks (pycocotools): parse, decode, encode and stream-write.

Overlaps: when RLE entries overlap in one frame, the LATER entry wins.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from isvos.limits import MAX_OBJECT_ID

from .errors import MediaError
from .limits import DEFAULT_LIMITS, MediaLimits


def check_object_ids(ids: Sequence[int], what: str) -> None:
    bad = [i for i in ids if not 1 <= int(i) <= MAX_OBJECT_ID]
    if bad:
        raise MediaError(
            "bad_object_id",
            f"{what}: object id {bad[0]} is outside 1..{MAX_OBJECT_ID} (0 is background).",
        )
    if len(set(ids)) != len(ids):
        raise MediaError("bad_object_id", f"{what}: object ids {list(ids)} are not unique.")


def as_labels(labels: np.ndarray) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 2:
        raise ValueError(f"label map must be 2-D, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > MAX_OBJECT_ID):
            raise ValueError(f"label values must be in 0..{MAX_OBJECT_ID}")
        arr = arr.astype(np.uint8)
    return arr


# ---------------------------------------------------------------- COCO RLE


@dataclass
class RleEntry:
    """One decoded RLE object mask."""

    frame: int
    obj_id: int
    mask: np.ndarray  # HxW bool


@dataclass
class RleDocument:
    """Parsed RLE JSON: entries, listed frames, and whether it is our writer's format."""

    entries: list[RleEntry]
    frames: list[int]
    size: tuple[int, int] | None
    writer_format: bool


def _counts_from_string(s: bytes) -> list[int]:
    """Run lengths of a compressed COCO RLE string (pycocotools' rleFrString, checked)."""
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            if p >= len(s):
                raise ValueError("the counts string ends mid-number")
            c = s[p] - 48
            if not 0 <= c < 64:
                raise ValueError(f"invalid character {chr(s[p])!r} in counts")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def _decode_segmentation(seg: Any, where: str, name: str, max_pixels: int) -> np.ndarray:
    """Decode one RLE after checking that its runs cover exactly h*w pixels (pycocotools
    reads uninitialised memory on inconsistent input)."""
    if not isinstance(seg, dict) or "size" not in seg or "counts" not in seg:
        raise MediaError(
            "mask_unreadable",
            f"{name}: {where} needs a 'segmentation' with 'size' [h, w] and 'counts' "
            "(COCO RLE; polygons are not supported).",
        )
    try:
        h, w = (int(v) for v in seg["size"])
        if h <= 0 or w <= 0 or h * w > max_pixels:
            raise ValueError(f"size {h}x{w} is empty or over {max_pixels} pixels")
        counts = seg["counts"]
        if isinstance(counts, str):
            counts = counts.encode("ascii")
        if isinstance(counts, bytes):
            runs = _counts_from_string(counts)
        elif isinstance(counts, list) and all(type(c) is int for c in counts):
            runs = counts
        else:
            raise TypeError("'counts' must be a string or a list of ints")
        if any(r < 0 for r in runs) or sum(runs) != h * w:
            raise ValueError(f"run lengths do not cover {h}x{w} pixels")
        if isinstance(counts, bytes):
            rle: Any = {"size": [h, w], "counts": counts}
        else:
            rle = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
        mask = np.asarray(mask_utils.decode(rle))
    except (TypeError, ValueError, KeyError, UnicodeEncodeError) as e:
        raise MediaError("mask_unreadable", f"{name}: {where} is not valid COCO RLE ({e}).") from e
    if mask.shape != (h, w):
        raise MediaError("mask_unreadable", f"{name}: {where} does not decode to {h}x{w}.")
    return mask.astype(bool)


def _int_field(entry: dict[str, Any], key: str, default: int | None, where: str, name: str) -> int:
    value = entry.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise MediaError("mask_unreadable", f"{name}: {where} needs an integer {key!r}.")
    return value


def parse_rle(
    path_or_obj: str | Path | Any, limits: MediaLimits = DEFAULT_LIMITS, *, prompts: bool = False
) -> RleDocument:
    """Parse an RLE JSON file or already-loaded object into decoded entries.

    ``limits`` bounds each mask's declared size (``max_pixels``); for ``prompts`` (masks a
    user gives), also the entries, distinct objects and distinct frames, before any mask is
    decoded.
    """
    max_px = limits.max_pixels
    if isinstance(path_or_obj, str | Path):
        name = Path(path_or_obj).name
        try:
            obj = json.loads(Path(path_or_obj).read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise MediaError("mask_unreadable", f"mask file {str(path_or_obj)!r} not found.") from e
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise MediaError("mask_unreadable", f"{name}: not valid JSON ({e}).") from e
    else:
        obj, name = path_or_obj, "RLE masks"
    entries: list[RleEntry] = []
    frames: list[int] = []
    size: tuple[int, int] | None = None
    writer = isinstance(obj, dict) and "frames" in obj
    if writer:
        if "height" in obj and "width" in obj:
            size = (
                _int_field(obj, "height", None, "the header", name),
                _int_field(obj, "width", None, "the header", name),
            )
        if not isinstance(obj["frames"], list):
            raise MediaError("mask_unreadable", f"{name}: 'frames' must be a list.")
        raw: list[tuple[int, dict[str, Any]]] = []
        for k, fr in enumerate(obj["frames"]):
            if not isinstance(fr, dict) or not isinstance(fr.get("objects"), list):
                raise MediaError("mask_unreadable", f"{name}: frames[{k}] needs an 'objects' list.")
            fi = _int_field(fr, "frame", None, f"frames[{k}]", name)
            frames.append(fi)
            raw += [(fi, o) for o in fr["objects"]]
    elif isinstance(obj, list | dict):
        items = obj if isinstance(obj, list) else [obj]
        raw = []
        for k, o in enumerate(items):
            if not isinstance(o, dict):
                raise MediaError("mask_unreadable", f"{name}: entry {k} is not an object.")
            raw.append((_int_field(o, "frame", 0, f"entry {k}", name), o))
    else:
        raise MediaError("mask_unreadable", f"{name}: expected a JSON list of RLE objects.")
    if prompts:
        _check_counts(raw, name, limits)
    for k, (fi, o) in enumerate(raw):
        where = f"entry {k} (frame {fi})"
        if not isinstance(o, dict):
            raise MediaError("mask_unreadable", f"{name}: {where} is not an object.")
        obj_id = _int_field(o, "id", None, where, name)
        if fi < 0:
            raise MediaError("frame_range", f"{name}: {where} has a negative frame index.")
        check_object_ids([obj_id], f"{name} {where}")
        mask = _decode_segmentation(o.get("segmentation"), where, name, max_px)
        if size is None:
            size = mask.shape
        elif mask.shape != size:
            raise MediaError(
                "mask_size_mismatch",
                f"{name}: {where} is {mask.shape[1]}x{mask.shape[0]} but earlier masks are "
                f"{size[1]}x{size[0]}; all masks must have one size.",
            )
        entries.append(RleEntry(fi, obj_id, mask))
        frames.append(fi)
    return RleDocument(entries, list(dict.fromkeys(frames)), size, writer)


def _check_counts(raw: list[tuple[int, Any]], name: str, limits: MediaLimits) -> None:
    """Refuse an RLE document over its limits before any mask is decoded."""
    if len(raw) > limits.max_rle_entries:
        raise MediaError(
            "too_many_objects",
            f"{name} has {len(raw)} RLE entries, over the limit of {limits.max_rle_entries}.",
        )
    ids = {o.get("id") for _, o in raw if isinstance(o, dict)}
    if len(ids) > limits.max_objects:
        raise MediaError(
            "too_many_objects",
            f"{name} names {len(ids)} objects, over the limit of {limits.max_objects}.",
        )
    frames = {fi for fi, _ in raw}
    if len(frames) > limits.max_prompt_frames:
        raise MediaError(
            "frame_range",
            f"{name} has masks on {len(frames)} frames, over the limit of "
            f"{limits.max_prompt_frames}; give masks on the first frame and a few corrections.",
        )


def read_coco_rle(path_or_obj: str | Path | RleDocument | Any) -> dict[int, np.ndarray]:
    """Decode RLE JSON to ``{frame_index: label map}`` (later entries win overlaps).

    Everything is decoded into memory: meant for prompts and checks, not huge outputs.

    Accepts a list of ``{"id", "frame" (default 0), "segmentation": {"size", "counts"}}``
    or the ``write_rle_json`` format. Frames listed with no objects give empty maps.
    """
    doc = path_or_obj if isinstance(path_or_obj, RleDocument) else parse_rle(path_or_obj)
    if doc.size is None:
        return {}
    out = {fi: np.zeros(doc.size, dtype=np.uint8) for fi in sorted(doc.frames)}
    for e in doc.entries:
        out[e.frame][e.mask] = e.obj_id
    return out


def encode_rle(labels: np.ndarray, object_ids: Iterable[int]) -> list[dict[str, Any]]:
    """COCO RLE per object id (absent objects get an empty RLE); counts are str."""
    arr = as_labels(labels)
    h, w = arr.shape
    out: list[dict[str, Any]] = []
    for obj in object_ids:
        rle = mask_utils.encode(np.asfortranarray((arr == obj).astype(np.uint8)))
        counts = rle["counts"]
        out.append(
            {
                "id": int(obj),
                "segmentation": {
                    "size": [h, w],
                    "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
                },
            }
        )
    return out


class RleJsonWriter:
    """Write ``coco_rle`` JSON one frame at a time (``write``), then ``close``.

    Written to a temporary file and renamed on ``close``, so readers never see a partial
    file; ``abort`` drops it."""

    def __init__(self, path: str | Path, object_ids: Sequence[int], size: tuple[int, int]) -> None:
        self.ids = [int(i) for i in object_ids]
        self.size = (int(size[0]), int(size[1]))
        self.dest = Path(path)
        self.tmp = self.dest.with_name(self.dest.name + ".part")
        self.count = 0
        self.file = open(self.tmp, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        head = {"format": "coco_rle", "height": self.size[0], "width": self.size[1],
                "objects": self.ids}  # fmt: skip
        self.file.write(json.dumps(head)[:-1] + ', "frames": [')

    def write(self, frame_index: int, labels: np.ndarray) -> None:
        arr = as_labels(labels)
        if arr.shape != self.size:
            raise ValueError(f"frame {frame_index} is {arr.shape}, expected {self.size}")
        rec = {"frame": int(frame_index), "objects": encode_rle(arr, self.ids)}
        self.file.write((",\n" if self.count else "\n") + json.dumps(rec, separators=(",", ":")))
        self.count += 1

    def close(self) -> None:
        if self.file.closed:
            return
        self.file.write("\n]}\n")
        self.file.close()
        os.replace(self.tmp, self.dest)

    def abort(self) -> None:
        if not self.file.closed:
            self.file.close()
        self.tmp.unlink(missing_ok=True)


def write_rle_json(
    path: str | Path,
    frames: Iterable[tuple[int, np.ndarray]],
    object_ids: Sequence[int],
    size: tuple[int, int] | None = None,
) -> None:
    """Write ``(frame_index, labels)`` pairs to a ``coco_rle`` JSON file, one at a time.

    ``size`` (h, w) is needed only when ``frames`` may be empty."""
    it = iter(frames)
    first = next(it, None)
    if size is None and first is not None:
        size = as_labels(first[1]).shape  # type: ignore[assignment]
    if size is None:
        raise ValueError("write_rle_json: no frames and no size given")
    writer = RleJsonWriter(path, object_ids, size)
    try:
        for fi, labels in itertools.chain([first] if first is not None else [], it):
            writer.write(fi, labels)
    except BaseException:
        writer.abort()
        raise
    writer.close()
