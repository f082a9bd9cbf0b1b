"""Frame folders (DAVIS JPEGImages layout): sorted .jpg/.jpeg/.png files of one size.

Files are ordered naturally (2.jpg before 10.jpg); EXIF orientation is applied.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from .base import Frame, VideoInfo, check_count, check_dims, past_end
from .errors import MediaError
from .limits import MediaLimits

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png")
_EXIF_ORIENTATION = 0x0112
_TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)


def _natural_key(path: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def list_frame_files(folder: Path) -> list[Path]:
    """Image files of a frame folder, in natural order (2.jpg before 10.jpg)."""
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files, key=_natural_key)


def _image_size(path: Path) -> tuple[int, int, int, int, str, str]:
    """(displayed w, h, stored w, h, format, mode) of an image, reading the header only."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
            fmt, mode = (im.format or "").lower(), im.mode
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise MediaError(
            "video_unreadable", f"frame {path.name!r} is not a readable image ({e})."
        ) from e
    dw, dh = (h, w) if orientation in _TRANSPOSED_ORIENTATIONS else (w, h)
    return dw, dh, w, h, fmt, mode


def probe_folder(folder: Path, limits: MediaLimits) -> VideoInfo:
    """Probe a frame folder from image headers; all frames must share one size."""
    files = list_frame_files(folder)
    if not files:
        raise MediaError(
            "video_unreadable",
            f"folder {folder.name!r} contains no .jpg/.jpeg/.png frames; "
            "use a DAVIS-style folder of numbered images (00000.jpg, 00001.jpg, ...).",
        )
    check_count(len(files), limits, f"frame folder {folder.name!r}")
    dw, dh, cw, ch, fmt, mode = _image_size(files[0])
    check_dims(cw, ch, limits, f"frame {files[0].name!r}")
    for f in files[1:]:
        w, h = _image_size(f)[:2]
        if (w, h) != (dw, dh):
            raise MediaError(
                "video_unreadable",
                f"frame {f.name!r} is {w}x{h} but {files[0].name!r} is {dw}x{dh}; "
                "all frames in a folder must have the same size.",
            )
    return VideoInfo(
        path=folder,
        width=dw,
        height=dh,
        coded_width=cw,
        coded_height=ch,
        rotation=0,
        frame_count=len(files),
        fps=None,
        duration_s=None,
        codec=fmt,
        pixel_format=mode,
        has_audio=False,
        is_frame_folder=True,
    )


def iter_folder(
    folder: Path, limits: MediaLimits, start: int, end: int | None, stride: int
) -> Iterator[Frame]:
    """Decode frames ``start:end:stride`` of a folder as RGB (EXIF orientation applied)."""
    info = probe_folder(folder, limits)
    files = list_frame_files(folder)
    if start >= len(files):
        raise past_end(start, len(files))
    for i in range(start, min(end if end is not None else len(files), len(files)), stride):
        try:
            with Image.open(files[i]) as im:
                rgb = ImageOps.exif_transpose(im).convert("RGB")
                image = np.asarray(rgb, dtype=np.uint8)
        except (OSError, ValueError) as e:
            raise MediaError(
                "video_unreadable", f"frame {files[i].name!r} cannot be decoded ({e})."
            ) from e
        if image.shape[:2] != (info.height, info.width):
            raise MediaError(
                "video_unreadable",
                f"frame {files[i].name!r} is {image.shape[1]}x{image.shape[0]}, expected "
                f"{info.width}x{info.height}; all frames must have the same size.",
            )
        yield Frame(index=i, pts_s=None, image=image)
