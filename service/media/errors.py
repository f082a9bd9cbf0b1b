"""Errors raised by the media layer for bad user input."""

from __future__ import annotations

#: Machine-readable error codes and what they mean.
ERROR_CODES: dict[str, str] = {
    "video_unreadable": "the video file cannot be opened or decoded",
    "video_too_large": "the file is larger than the configured size limit",
    "dimensions_too_large": "the frame size exceeds the configured limits",
    "too_many_frames": "the video has more frames than allowed",
    "too_long": "the video is longer than allowed",
    "frame_range": "the requested frame range is outside the video",
    "unknown_format": "the file type is not supported",
    "mask_unreadable": "the mask file cannot be read",
    "mask_size_mismatch": "the mask size differs from the video size",
    "mask_empty": "a mask contains no object pixels",
    "too_many_objects": "more objects than allowed",
    "bad_object_id": "an object id is outside 1..255",
}


class MediaError(ValueError):
    """A problem with user-supplied media; ``code`` is stable, the message is for humans.

    The message says what is wrong and what to do about it.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code: str = code
        self.message: str = message

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"MediaError(code={self.code!r}, message={self.message!r})"

    def to_dict(self) -> dict[str, str]:
        """JSON-ready form for HTTP error bodies."""
        return {"code": self.code, "message": self.message}
