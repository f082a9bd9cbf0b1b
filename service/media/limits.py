"""Resource limits applied to user media before (and while) decoding."""

from __future__ import annotations

from dataclasses import dataclass

from isvos.limits import MAX_OBJECT_ID


@dataclass(frozen=True)
class MediaLimits:
    """Upper bounds on accepted input; checked from headers first, then while decoding.

    Width and height limits apply to the coded (stored) frame size, so a rotated
    portrait video is checked as the landscape frame it is stored as.
    """

    # 2 GiB: larger uploads are almost always raw/intermediate files, not phone clips.
    max_file_bytes: int = 2 * 1024**3
    # 8K UHD width; anything wider is not a camera video.
    max_width: int = 7680
    # 8K UHD height.
    max_height: int = 4320
    # Slightly more than 8K UHD (DCI 8K width 8192): bounds per-frame RAM (~106 MB RGB).
    max_pixels: int = 8192 * 4320
    # About 55 min at 30 fps; bounds mask output size and run time.
    max_frames: int = 100_000
    # One hour of video.
    max_duration_s: float = 3600.0
    # Label maps are uint8 with 0 = background, so at most 255 objects.
    max_objects: int = MAX_OBJECT_ID
    # COCO RLE prompts: entries decoded at most (each is a full-size mask), and distinct
    # frames carrying masks (each becomes a memorised, pinned frame).
    max_rle_entries: int = 4096
    max_prompt_frames: int = 64

    def __post_init__(self) -> None:
        for name in ("max_file_bytes", "max_width", "max_height", "max_pixels", "max_frames",
                     "max_rle_entries", "max_prompt_frames"):  # fmt: skip
            if getattr(self, name) <= 0:
                raise ValueError(f"MediaLimits.{name} must be positive")
        if self.max_duration_s <= 0:
            raise ValueError("MediaLimits.max_duration_s must be positive")
        if not 1 <= self.max_objects <= MAX_OBJECT_ID:
            raise ValueError(f"MediaLimits.max_objects must be in 1..{MAX_OBJECT_ID}")


DEFAULT_LIMITS = MediaLimits()
