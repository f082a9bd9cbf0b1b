"""Mask readers and writers: indexed PNG (DAVIS palette), binary PNGs, COCO RLE JSON.

A *label map* is an HxW uint8 array: 0 = background, 1..255 = object ids.
Where objects overlap (binary masks, RLE entries) the LATER object wins.
"""

from __future__ import annotations

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


def _unreadable(path: Path | str, detail: str) -> MediaError:
    return MediaError("mask_unreadable", f"cannot read mask {Path(path).name!r}: {detail}")


def _open_image(path: Path) -> Image.Image:
    if not path.is_file():
        raise MediaError("mask_unreadable", f"mask file {str(path)!r} does not exist.")
    try:
        im = Image.open(path)
        im.load()
        return im
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise _unreadable(path, f"not a readable image ({e}); save masks as PNG.") from e


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


def read_indexed_png(path: str | Path) -> np.ndarray:
    """Read a label map: palette PNG indices or grayscale values are the object ids.

    An RGB(A) PNG is accepted only if every colour is a DAVIS palette colour (mapped
    to its index) or it is grey (R=G=B, values are ids); alpha is ignored.
    """
    p = Path(path)
    im = _open_image(p)
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


def read_binary_masks(
    paths: Sequence[str | Path], ids: Sequence[int] | None = None
) -> np.ndarray:
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


def write_indexed_png(path: str | Path, labels: np.ndarray) -> None:
    """Save a label map as a palette PNG with the DAVIS palette (pixel value = id)."""
    im = Image.fromarray(np.ascontiguousarray(as_labels(labels)), mode="L")
    im.putpalette(DAVIS_PALETTE)
    im.save(path, format="PNG", optimize=False)


__all__ = [
    "DAVIS_PALETTE",
    "PALETTE_RGB",
    "DEFAULT_LIMITS",
    "MediaLimits",
    "RleDocument",
    "RleEntry",
    "encode_rle",
    "image_mode",
    "load_mask_input",
    "parse_rle",
    "read_binary_mask",
    "read_binary_masks",
    "read_coco_rle",
    "read_indexed_png",
    "write_indexed_png",
    "write_rle_json",
]
