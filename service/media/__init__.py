"""Media layer (torch-free): video probing/decoding, mask I/O, overlays, limits, errors."""

from .errors import MediaError
from .limits import DEFAULT_LIMITS, MediaLimits
from .masks import (
    DAVIS_PALETTE,
    encode_rle,
    load_mask_input,
    read_binary_masks,
    read_coco_rle,
    read_indexed_png,
    write_indexed_png,
    write_rle_json,
)
from .overlay import OverlayWriter, contact_sheet, render_overlay, write_preview
from .video import BackgroundDecoder, Frame, VideoInfo, count_frames, iter_frames, probe_video

__all__ = [
    "DAVIS_PALETTE",
    "DEFAULT_LIMITS",
    "BackgroundDecoder",
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
