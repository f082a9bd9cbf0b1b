"""Mask readers and writers: indexed PNG (DAVIS palette), binary PNGs, COCO RLE JSON.

A *label map* is an HxW uint8 array: 0 = background, 1..255 = object ids.
Where objects overlap (binary masks, RLE entries) the LATER object wins.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .errors import MediaError
from .limits import DEFAULT_LIMITS, MediaLimits
from .rle import (
    RleDocument,
    RleEntry,
    as_labels,
    check_object_ids,
    encode_rle,
    parse_rle,
    read_coco_rle,
    write_rle_json,
)


def _davis_palette() -> tuple[int, ...]:
    """The standard PASCAL VOC / DAVIS bit-interleaved palette."""
    out: list[int] = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out += [r, g, b]
    return tuple(out)


#: 256*3 ints: id 0 black, 1 (128,0,0), 2 (0,128,0), 3 (128,128,0), 4 (0,0,128), ...
DAVIS_PALETTE: tuple[int, ...] = _davis_palette()
#: The same palette as a (256, 3) uint8 array.
PALETTE_RGB: np.ndarray = np.array(DAVIS_PALETTE, dtype=np.uint8).reshape(256, 3)
_PALETTE_KEYS: dict[int, int] = {
    (int(r) << 16) | (int(g) << 8) | int(b): i for i, (r, g, b) in enumerate(PALETTE_RGB)
}


def _unreadable(path: Path | str | bytes, detail: str) -> MediaError:
    name = "mask" if isinstance(path, bytes) else Path(path).name
    return MediaError("mask_unreadable", f"cannot read mask {name!r}: {detail}")


def _open_image(path: Path | bytes, size: tuple[int, int] | None = None) -> Image.Image:
    """Open and decode an image file or its bytes; with ``size`` (h, w), an image of another
    size is refused from its header, before anything is decoded."""
    name = "mask" if isinstance(path, bytes) else path
    if not isinstance(path, bytes) and not path.is_file():
        raise MediaError("mask_unreadable", f"mask file {str(path)!r} does not exist.")
    try:
        im = Image.open(io.BytesIO(path) if isinstance(path, bytes) else path)
        if size is not None and (im.height, im.width) != tuple(size):
            raise MediaError(
                "mask_size_mismatch",
                f"the mask is {im.width}x{im.height} but the frame is {size[1]}x{size[0]}",
            )
        im.load()
        return im
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        if isinstance(e, MediaError):
            raise
        raise _unreadable(name, f"not a readable image ({e}); save masks as PNG.") from e


def image_mode(path: str | Path) -> str:
    """Pillow mode of an image file (``"P"`` for palette PNGs), reading only the header."""
    try:
        with Image.open(path) as im:
            return im.mode
    except (OSError, ValueError) as e:
        raise _unreadable(path, f"not a readable image ({e}).") from e


def _rgb_to_ids(rgb: np.ndarray, path: Path) -> np.ndarray:
    keys = (
        (rgb[..., 0].astype(np.int32) << 16)
        | (rgb[..., 1].astype(np.int32) << 8)
        | rgb[..., 2].astype(np.int32)
    )
    uniq, inverse = np.unique(keys, return_inverse=True)
    unknown = [int(k) for k in uniq if int(k) not in _PALETTE_KEYS]
    if not unknown:
        lut = np.array([_PALETTE_KEYS[int(k)] for k in uniq], dtype=np.uint8)
        return lut[inverse].reshape(keys.shape)
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return np.ascontiguousarray(rgb[..., 0])  # grey stored as RGB: values are ids
    examples = ", ".join(str(((k >> 16) & 255, (k >> 8) & 255, k & 255)) for k in unknown[:3])
    raise _unreadable(
        path,
        f"it is an RGB image with colours outside the DAVIS palette (e.g. {examples}). "
        "Save it as a palette (indexed) PNG or a grayscale PNG whose pixel values are "
        "object ids, or as one black/white PNG per object.",
    )


def read_indexed_png(path: str | Path | bytes, size: tuple[int, int] | None = None) -> np.ndarray:
    """Read a label map (a file or its bytes): palette PNG indices or grayscale values are
    the object ids. With ``size`` (h, w) another size is refused before decoding.

    An RGB(A) PNG is accepted only if every colour is a DAVIS palette colour (mapped
    to its index) or it is grey (R=G=B, values are ids); alpha is ignored.
    """
    p = path if isinstance(path, bytes) else Path(path)
    im = _open_image(p, size)
    if im.mode in ("P", "L", "1"):
        return np.asarray(im, dtype=np.uint8).copy()
    if im.mode in ("PA", "LA"):
        return np.asarray(im.getchannel(0), dtype=np.uint8).copy()
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(im)
        if arr.min() < 0 or arr.max() > 255 or not np.all(np.equal(np.mod(arr, 1), 0)):
            raise _unreadable(
                p, f"values range {arr.min()}..{arr.max()}; object ids must be integers 0..255."
            )
        return arr.astype(np.uint8)
    if im.mode in ("RGB", "RGBA"):
        return _rgb_to_ids(np.asarray(im)[..., :3], p)
    raise _unreadable(p, f"unsupported image mode {im.mode!r}; save it as a palette PNG.")


def read_binary_mask(path: str | Path) -> np.ndarray:
    """One object's mask as bool: nonzero pixels (any colour channel, or alpha) = object."""
    p = Path(path)
    im = _open_image(p)
    arr = np.asarray(im)
    if arr.ndim == 2:
        return arr != 0
    if im.mode in ("LA", "PA"):
        return arr[..., 0] != 0
    if im.mode == "RGBA" and arr[..., 3].min() != arr[..., 3].max():
        return arr[..., 3] != 0  # alpha carries the mask
    return np.any(arr[..., :3] != 0, axis=-1)


def read_binary_masks(paths: Sequence[str | Path], ids: Sequence[int] | None = None) -> np.ndarray:
    """Merge one binary PNG per object into a label map (ids default 1..n).

    Overlapping pixels go to the LATER object in ``paths``. A mask with no pixels
    raises ``mask_empty``; differing sizes raise ``mask_size_mismatch``.
    """
    files = [Path(p) for p in paths]
    if not files:
        raise MediaError("mask_unreadable", "no mask files were given.")
    obj_ids = list(ids) if ids is not None else list(range(1, len(files) + 1))
    if len(obj_ids) != len(files):
        raise MediaError(
            "bad_object_id", f"{len(files)} mask files but {len(obj_ids)} object ids were given."
        )
    check_object_ids(obj_ids, "binary masks")
    labels: np.ndarray | None = None
    for f, obj in zip(files, obj_ids, strict=True):
        m = read_binary_mask(f)
        if labels is None:
            labels = np.zeros(m.shape, dtype=np.uint8)
            first = f
        elif m.shape != labels.shape:
            raise MediaError(
                "mask_size_mismatch",
                f"mask {f.name!r} is {m.shape[1]}x{m.shape[0]} but {first.name!r} is "
                f"{labels.shape[1]}x{labels.shape[0]}; all object masks must have one size.",
            )
        if not m.any():
            raise MediaError(
                "mask_empty",
                f"mask {f.name!r} (object {obj}) has no object pixels; draw the object in "
                "white (nonzero) on black, or leave the file out.",
            )
        labels[m] = obj
    assert labels is not None
    return labels


# ---------------------------------------------------------------- writers


PNG_COMPRESS_LEVEL = 3  # zlib level: half the CPU of the default 6, files ~1.7x larger


def write_indexed_png(path: str | Path | io.BytesIO, labels: np.ndarray) -> None:
    """Save a label map as a palette PNG with the DAVIS palette (pixel value = id)."""
    im = Image.fromarray(np.ascontiguousarray(as_labels(labels)), mode="L")
    im.putpalette(DAVIS_PALETTE)
    im.save(path, format="PNG", optimize=False, compress_level=PNG_COMPRESS_LEVEL)


def encode_indexed_png(labels: np.ndarray) -> bytes:
    """The bytes ``write_indexed_png`` would write."""
    buffer = io.BytesIO()
    write_indexed_png(buffer, labels)
    return buffer.getvalue()


# ---------------------------------------------------------------- input dispatch

MaskSpec = str | Path | Sequence[str | Path]


def _png_files(folder: Path) -> list[Path]:
    def key(p: Path) -> list[int | str]:
        return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]

    return sorted((p for p in folder.iterdir() if p.suffix.lower() == ".png"), key=key)


def _load_folder(folder: Path) -> tuple[dict[int, np.ndarray], dict[int, str]]:
    """Folder rule: all names are frame numbers (``00012.png``) AND all are palette PNGs
    -> indexed masks for those frames (DAVIS Annotations layout); otherwise each PNG is
    one object's binary mask for frame 0, ids 1..n in natural name order."""
    files = _png_files(folder)
    if not files:
        raise MediaError("mask_unreadable", f"mask folder {folder.name!r} contains no .png files.")
    if all(f.stem.isdigit() for f in files) and all(image_mode(f) == "P" for f in files):
        maps: dict[int, np.ndarray] = {}
        names: dict[int, str] = {}
        for f in files:
            fi = int(f.stem)
            if fi in maps:
                raise MediaError(
                    "mask_unreadable",
                    f"mask folder {folder.name!r}: {names[fi]!r} and {f.name!r} are both "
                    f"frame {fi}; keep one.",
                )
            maps[fi], names[fi] = read_indexed_png(f), f.name
        return maps, names
    return {0: read_binary_masks(files)}, {0: f"binary masks in {folder.name!r}"}


def _fit_size(
    labels: np.ndarray, name: str, video_size: tuple[int, int], resize: bool
) -> np.ndarray:
    vh, vw = video_size
    h, w = labels.shape
    if (h, w) == (vh, vw):
        return labels
    hint = (
        " It looks rotated: masks must match the displayed (rotated) video orientation."
        if (h, w) == (vw, vh)
        else ""
    )
    same_aspect = abs(w / h - vw / vh) <= 0.02 * (vw / vh)
    if resize and same_aspect:
        return cv2.resize(labels, (vw, vh), interpolation=cv2.INTER_NEAREST)
    todo = (
        "the aspect ratio differs, so it cannot be resized; draw it on a video frame"
        if resize
        else "export it at the video size, or enable resize_masks (--resize-masks)"
    )
    raise MediaError(
        "mask_size_mismatch",
        f"mask {name} is {w}x{h} but the video is {vw}x{vh}; {todo}.{hint}",
    )


def _rle_prompt_maps(doc: RleDocument, name: str) -> dict[int, np.ndarray]:
    maps = read_coco_rle(doc)
    for e in doc.entries:
        if not doc.writer_format and not e.mask.any():
            raise MediaError(
                "mask_empty",
                f"{name}: object {e.obj_id} in frame {e.frame} has no pixels; remove the "
                "entry or draw the object.",
            )
    if doc.writer_format:  # our own output: frames where every object is absent are skipped
        maps = {fi: m for fi, m in maps.items() if m.any()} or maps
    return maps


def load_mask_input(
    spec: MaskSpec,
    video_size: tuple[int, int],
    limits: MediaLimits = DEFAULT_LIMITS,
    resize_masks: bool = False,
    num_frames: int | None = None,
) -> dict[int, np.ndarray]:
    """Load the user's prompt masks as ``{frame_index: label map}``, validated.

    ``spec``: a ``.png`` (indexed, frame 0); several PNGs (binary, one per object,
    ids 1..n, frame 0); a folder (see ``_load_folder``); or a ``.json`` COCO RLE file.
    ``video_size`` is the displayed (h, w). Raises MediaError: unknown_format,
    mask_unreadable, mask_size_mismatch, mask_empty, too_many_objects, frame_range.
    """
    paths = [Path(spec)] if isinstance(spec, str | Path) else [Path(p) for p in spec]
    if not paths:
        raise MediaError("mask_unreadable", "no mask was given.")
    for p in paths:
        if not p.exists():
            raise MediaError("mask_unreadable", f"mask {str(p)!r} does not exist.")
        if p.is_file() and p.suffix.lower() not in (".png", ".json"):
            raise MediaError(
                "unknown_format",
                f"mask {p.name!r} has an unsupported type {p.suffix or '(none)'!r}; use "
                "lossless PNG (indexed or one binary PNG per object) or COCO RLE .json.",
            )
    if len(paths) > limits.max_objects:
        raise MediaError(
            "too_many_objects",
            f"{len(paths)} object masks given, over the limit of {limits.max_objects}.",
        )
    names: dict[int, str]
    if len(paths) > 1:
        if any(p.suffix.lower() != ".png" for p in paths):
            raise MediaError("unknown_format", "several mask files must all be binary .png masks.")
        maps, names = {0: read_binary_masks(paths)}, {0: "binary masks"}
    elif paths[0].is_dir():
        maps, names = _load_folder(paths[0])
    elif paths[0].suffix.lower() == ".png":
        maps, names = {0: read_indexed_png(paths[0])}, {0: repr(paths[0].name)}
    else:
        maps = _rle_prompt_maps(parse_rle(paths[0], limits, prompts=True), paths[0].name)
        names = {fi: f"{paths[0].name!r} frame {fi}" for fi in maps}
        if not maps:
            raise MediaError("mask_empty", f"{paths[0].name!r} contains no masks.")
    out: dict[int, np.ndarray] = {}
    ids: set[int] = set()
    for fi in sorted(maps):
        name = names.get(fi, f"frame {fi}")
        if num_frames is not None and fi >= num_frames:
            raise MediaError(
                "frame_range",
                f"mask {name} is for frame {fi} but the video has {num_frames} frames.",
            )
        labels = _fit_size(maps[fi], name, video_size, resize_masks)
        present = set(np.unique(labels).tolist()) - {0}
        if not present:
            raise MediaError(
                "mask_empty",
                f"mask {name} contains no objects (all pixels are 0); object pixels must "
                "hold ids 1..255.",
            )
        ids |= present
        out[fi] = labels
    if len(ids) > limits.max_objects:
        raise MediaError(
            "too_many_objects",
            f"the masks contain {len(ids)} objects, over the limit of {limits.max_objects}; "
            "segment fewer objects per request.",
        )
    return out


def palette_color(obj_id: int) -> tuple[int, int, int]:
    """RGB colour of an object id in the DAVIS palette."""
    r, g, b = PALETTE_RGB[int(obj_id) % 256]
    return int(r), int(g), int(b)


__all__ = [
    "DAVIS_PALETTE",
    "PALETTE_RGB",
    "RleDocument",
    "RleEntry",
    "as_labels",
    "check_object_ids",
    "encode_indexed_png",
    "encode_rle",
    "image_mode",
    "load_mask_input",
    "palette_color",
    "parse_rle",
    "read_binary_mask",
    "read_binary_masks",
    "read_coco_rle",
    "read_indexed_png",
    "write_indexed_png",
    "write_rle_json",
]
