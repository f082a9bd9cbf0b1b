"""A multipart job request, streamed part by part into the blob store.

The body is parsed as it arrives (``python_multipart``): file parts are written in chunks
to the job's blob folder and their size limit is enforced while they stream, so an upload
over the limit is refused with nothing left on disk and a video is never held whole in
memory. Client filenames are used only for their extension (``.png`` / ``.json`` decide how
masks are read); blob names are the service's own.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from isvos.errors import IsvosError
from service.blobs import BlobWriter, LocalBlobStore

MASK_SUFFIXES = (".png", ".json")
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi")
MAX_TEXT_FIELD = 64 << 10  # options JSON, upload id
MAX_PARTS = 300
# Part headers are bounded by python_multipart itself (size and count: a malformed body).
TEXT_FIELDS = ("options", "upload_id")


@dataclass
class JobForm:
    video_key: str | None = None
    video_name: str = ""
    video_bytes: int = 0
    mask_keys: list[str] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)


class _Part:
    def __init__(self) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.field = b""
        self.value = b""
        self.name = ""
        self.filename: str | None = None
        self.writer: BlobWriter | None = None
        self.limit = 0
        self.size = 0
        self.text = bytearray()


class JobFormReader:
    """Parses one request into a ``JobForm`` under ``prefix`` in the blob store."""

    def __init__(
        self,
        blobs: LocalBlobStore,
        prefix: str,
        *,
        max_video_bytes: int,
        max_mask_bytes: int,
        max_mask_files: int,
    ) -> None:
        self.blobs = blobs
        self.prefix = prefix
        self.max_video_bytes = max_video_bytes
        self.max_mask_bytes = max_mask_bytes
        self.max_mask_files = max_mask_files
        self.form = JobForm()
        self.part: _Part | None = None
        self.parts = 0
        self.error: IsvosError | None = None
        self.pending: list[BlobWriter] = []

    async def read(self, request: Request) -> JobForm:
        content_type, params = parse_options_header(request.headers.get("content-type", ""))
        boundary = params.get(b"boundary")
        if content_type != b"multipart/form-data" or not boundary:
            raise IsvosError(
                "invalid_argument",
                "send the job as multipart/form-data with a 'video' (or 'upload_id'), "
                "'masks' and optional 'options' JSON",
            )
        parser = MultipartParser(boundary, callbacks={
            "on_part_begin": self._begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_done,
            "on_part_data": self._data,
            "on_part_end": self._end,
        })  # fmt: skip
        try:
            async for chunk in request.stream():
                # Parsing and file writes run on a thread: the loop stays free for others.
                await asyncio.to_thread(parser.write, chunk)
                if self.error is not None:
                    raise self.error
            parser.finalize()
            if self.error is not None:
                raise self.error
            if self.part is not None:
                raise IsvosError("invalid_argument", "the multipart body ends inside a part")
        except MultipartParseError as exc:
            self.abort()
            raise IsvosError("invalid_argument", f"malformed multipart body: {exc}") from exc
        except BaseException:
            self.abort()
            raise
        return self.form

    def abort(self) -> None:
        """Drop every file written so far (the caller removes the folder too)."""
        for writer in self.pending:
            writer.abort()
        if self.part is not None and self.part.writer is not None:
            self.part.writer.abort()
        self.blobs.delete_prefix(self.prefix)

    # ------------------------------------------------------------------ callbacks

    def _fail(self, code: str, message: str) -> None:
        if self.error is None:
            self.error = IsvosError(code, message)

    def _begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            self._fail("payload_too_large", f"more than {MAX_PARTS} parts in one request")
        self.part = _Part()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self.part.field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self.part.value += data[start:end]

    def _header_end(self) -> None:
        part = self.part
        part.headers[part.field.lower()] = part.value
        part.field, part.value = b"", b""

    def _headers_done(self) -> None:
        part = self.part
        _, options = parse_options_header(part.headers.get(b"content-disposition", b""))
        part.name = options.get(b"name", b"").decode("utf-8", "replace")
        raw = options.get(b"filename")
        part.filename = raw.decode("utf-8", "replace") if raw is not None else None
        if part.name == "video" and part.filename is not None:
            if self.form.video_key is not None:
                return self._fail("invalid_argument", "give one 'video' file")
            suffix = _suffix(part.filename, VIDEO_SUFFIXES) or ".video"
            key = f"{self.prefix}/input/video{suffix}"
            part.writer, part.limit = self.blobs.writer(key), self.max_video_bytes
            self.form.video_key = key
            self.form.video_name = _display_name(part.filename)
        elif part.name == "masks" and part.filename is not None:
            index = len(self.form.mask_keys)
            if index >= self.max_mask_files:
                return self._fail("too_many_objects", f"more than {self.max_mask_files} mask files")
            suffix = _suffix(part.filename, MASK_SUFFIXES)
            if suffix is None:
                return self._fail(
                    "unknown_format",
                    f"mask file {_display_name(part.filename)!r}: use an indexed or binary "
                    "PNG (.png) or COCO RLE (.json)",
                )
            key = f"{self.prefix}/input/mask-{index:03d}{suffix}"
            part.writer, part.limit = self.blobs.writer(key), self.max_mask_bytes
            self.form.mask_keys.append(key)
        elif part.name in TEXT_FIELDS and part.filename is None:
            if part.name in self.form.fields:
                return self._fail("invalid_argument", f"give '{part.name}' once")
            part.limit = MAX_TEXT_FIELD
        else:
            what = f"file '{part.name}'" if part.filename is not None else f"field '{part.name}'"
            self._fail(
                "invalid_argument",
                f"unknown {what}; a job takes 'video' (file) or 'upload_id', 'masks' "
                "(file, repeatable) and 'options' (JSON text)",
            )

    def _data(self, data: bytes, start: int, end: int) -> None:
        part = self.part
        if self.error is not None or part is None:
            return
        part.size += end - start
        if part.size > part.limit:
            what = "the video" if part.name == "video" else f"'{part.name}'"
            code = "video_too_large" if part.name == "video" else "payload_too_large"
            return self._fail(code, f"{what} is over the limit of {part.limit} bytes")
        if part.writer is not None:
            part.writer.write(data[start:end])
        else:
            part.text += data[start:end]

    def _end(self) -> None:
        part = self.part
        self.part = None
        if self.error is not None or part is None:
            if part is not None and part.writer is not None:
                part.writer.abort()
            return
        if part.writer is not None:
            if part.size == 0:
                part.writer.abort()
                what = "video" if part.name == "video" else "mask file"
                return self._fail(
                    "video_unreadable" if part.name == "video" else "mask_unreadable",
                    f"the {what} is empty (0 bytes)",
                )
            part.writer.commit()
            if part.name == "video":
                self.form.video_bytes = part.size
        elif part.name in TEXT_FIELDS:
            try:
                self.form.fields[part.name] = part.text.decode("utf-8")
            except UnicodeDecodeError:
                self._fail("invalid_argument", f"'{part.name}' is not UTF-8 text")


def _suffix(filename: str, allowed: tuple[str, ...]) -> str | None:
    suffix = PurePosixPath(filename.replace("\\", "/")).suffix.lower()
    return suffix if suffix in allowed else None


def _display_name(filename: str) -> str:
    """The client's file name for display only: its last path part, printable, short."""
    name = PurePosixPath(filename.replace("\\", "/")).name
    return "".join(c for c in name if c.isprintable())[:128]
