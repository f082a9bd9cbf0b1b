"""The blob store: videos, masks, frame outputs and session-record slots (DESIGN decision 7).

A local directory by default (a shared volume in compose, a PVC in Kubernetes), behind a
small interface an S3-compatible store can implement later: ``writer`` (streamed, committed
atomically), ``put``, ``get``, ``size``, ``local_path`` (for PyAV and ranged responses),
``list``, ``delete_prefix``. Keys are ``/``-separated names the service builds from its own
ids; a client's filename never becomes a path, and every key is checked to stay inside the
root (no ``..``, no absolute paths, no NUL, plain characters only).
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

from isvos.errors import IsvosError

_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


class BlobWriter:
    """Chunks into a temporary file; ``commit`` renames it into place, ``abort`` drops it."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self.temporary = final.with_name(f".{final.name}.{uuid.uuid4().hex}.part")
        self.file = open(self.temporary, "wb")  # noqa: SIM115 - closed by commit/abort
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.file.write(chunk)
        self.size += len(chunk)

    def commit(self) -> int:
        self.file.close()
        os.replace(self.temporary, self.final)
        return self.size

    def abort(self) -> None:
        if not self.file.closed:
            self.file.close()
        self.temporary.unlink(missing_ok=True)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is not None:
            self.abort()
        elif not self.file.closed:
            self.commit()


class LocalBlobStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        """The file of ``key``; refuses any key that is not a plain relative name."""
        parts = key.split("/")
        if not parts or not all(_SEGMENT.match(part) for part in parts):
            raise IsvosError("invalid_argument", f"invalid blob key {key!r}")
        path = self.root.joinpath(*parts)
        if self.root not in path.parents:
            raise IsvosError("invalid_argument", f"invalid blob key {key!r}")
        return path

    def writer(self, key: str) -> BlobWriter:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        return BlobWriter(path)

    def put(self, key: str, data: bytes) -> None:
        with self.writer(key) as writer:
            writer.write(data)

    def get(self, key: str) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            return None

    def size(self, key: str) -> int | None:
        try:
            return self.path(key).stat().st_size
        except FileNotFoundError:
            return None

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def local_path(self, key: str) -> Path:
        """A local file holding the blob (for decoders and ranged responses)."""
        return self.path(key)

    def list(self, prefix: str) -> list[str]:
        """Keys under ``prefix`` (a folder-like key), sorted."""
        folder = self.path(prefix)
        if not folder.is_dir():
            return []
        return sorted(
            str(p.relative_to(self.root)) for p in folder.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )  # fmt: skip

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> bool:
        """Remove everything under ``prefix``; True when something was there."""
        folder = self.path(prefix)
        if folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
            return True
        if folder.is_file():
            folder.unlink(missing_ok=True)
            return True
        return False

    def bytes_used(self, prefix: str | None = None) -> int:
        folder = self.path(prefix) if prefix else self.root
        return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())

    def prefixes(self, prefix: str) -> list[str]:
        """Immediate sub-folders of ``prefix`` (e.g. the job folders under ``jobs``)."""
        folder = self.path(prefix)
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.is_dir())


def job_prefix(job_id: str) -> str:
    return f"jobs/{job_id}"
