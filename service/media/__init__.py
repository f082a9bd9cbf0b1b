"""Media layer (torch-free): video probing/decoding, mask I/O, overlays, limits, errors.

Names are re-exported lazily, so ``import service.media.errors`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .errors import MediaError
    from .limits import DEFAULT_LIMITS, MediaLimits
    from .masks import (
        DAVIS_PALETTE,
        load_mask_input,
        read_binary_masks,
        read_indexed_png,
        write_indexed_png,
    )
    from .overlay import OverlayWriter, contact_sheet, render_overlay, write_preview
    from .rle import encode_rle, read_coco_rle, write_rle_json
    from .video import (
        BackgroundDecoder,
        Frame,
        VideoInfo,
        count_frames,
        iter_frames,
        probe_video,
    )

_EXPORTS: dict[str, str] = {
    "MediaError": "errors",
    "DEFAULT_LIMITS": "limits",
    "MediaLimits": "limits",
    "DAVIS_PALETTE": "masks",
    "load_mask_input": "masks",
    "read_binary_masks": "masks",
    "read_indexed_png": "masks",
    "write_indexed_png": "masks",
    "encode_rle": "rle",
    "read_coco_rle": "rle",
    "write_rle_json": "rle",
    "OverlayWriter": "overlay",
    "contact_sheet": "overlay",
    "render_overlay": "overlay",
    "write_preview": "overlay",
    "BackgroundDecoder": "video",
    "Frame": "video",
    "VideoInfo": "video",
    "count_frames": "video",
    "iter_frames": "video",
    "probe_video": "video",
}

__all__ = [
    "BackgroundDecoder",
    "DAVIS_PALETTE",
    "DEFAULT_LIMITS",
    "Frame",
    "MediaError",
    "MediaLimits",
    "OverlayWriter",
    "VideoInfo",
    "contact_sheet",
    "count_frames",
    "encode_rle",
    "iter_frames",
    "load_mask_input",
    "probe_video",
    "read_binary_masks",
    "read_coco_rle",
    "read_indexed_png",
    "render_overlay",
    "write_indexed_png",
    "write_preview",
    "write_rle_json",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
