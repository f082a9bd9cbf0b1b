"""Single video frames as JPEG for the web page (scrubbing and review). Torch-free.

A frame is decoded with the same decoder the workers use, so frame ``n`` here is frame ``n``
of the masks. Decoding goes forward from the start of the file; a cursor per video is kept
so that playing and stepping forward cost one frame each, and only a jump backwards decodes
from the start again.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from pathlib import Path

from PIL import Image

from service.media.errors import MediaError
from service.media.limits import MediaLimits
from service.media.video import iter_frames

JPEG_QUALITY = 88
MAX_CURSORS = 8


class _Cursor:
    def __init__(self, path: Path, limits: MediaLimits) -> None:
        self.path, self.limits = path, limits
        self.lock = threading.Lock()
        self.frames = None
        self.next_index = 0

    def read(self, index: int):
        if self.frames is None or index < self.next_index:
            self.frames = iter_frames(self.path, self.limits, index, None, 1, 1)
            self.next_index = index
        for frame in self.frames:
            self.next_index = frame.index + 1
            if frame.index == index:
                return frame.image
        self.frames = None
        raise MediaError("frame_range", f"the video has no frame {index}")


class FrameServer:
    """JPEG bytes of frame ``n`` of a video file; safe to call from several threads."""

    def __init__(self, limits: MediaLimits) -> None:
        self.limits = limits
        self._cursors: OrderedDict[Path, _Cursor] = OrderedDict()
        self._lock = threading.Lock()

    def jpeg(self, path: Path, index: int) -> bytes:
        cursor = self._cursor(Path(path))
        with cursor.lock:
            try:
                image = cursor.read(index)
            except BaseException:
                cursor.frames = None
                raise
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=JPEG_QUALITY)
        return buffer.getvalue()

    def _cursor(self, path: Path) -> _Cursor:
        with self._lock:
            cursor = self._cursors.pop(path, None) or _Cursor(path, self.limits)
            self._cursors[path] = cursor
            while len(self._cursors) > MAX_CURSORS:
                self._cursors.popitem(last=False)
            return cursor
