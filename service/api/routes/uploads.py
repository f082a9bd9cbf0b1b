"""Resumable uploads (the tus 1.0 protocol, ``tuspyserver``) under ``/v1/uploads``.

Each API key has its own upload folder: another key's upload id is not found. A finished
upload becomes a job's video with ``POST /v1/jobs`` and ``upload_id``; unused uploads
expire after the job retention time.
"""

from __future__ import annotations

import base64
from pathlib import Path

from fastapi import APIRouter, Depends
from tuspyserver import create_tus_router

from service.api.deps import Principal, principal
from service.settings import Settings


def uploads_router(settings: Settings, uploads_dir: Path) -> APIRouter:
    async def files_of(who: Principal = Depends(principal)):  # noqa: B008 - FastAPI style
        folder = str(uploads_dir / who.owner)
        return lambda _metadata=None: {"files_dir": folder}

    return create_tus_router(
        prefix="/v1/uploads",
        files_dir=str(uploads_dir / "_unused"),
        max_size=settings.limits.max_upload_bytes,
        auth=principal,
        days_to_keep=max(1, settings.jobs.retention_s // 86_400),
        file_dep=files_of,
        tags=["uploads"],
    )


_DEFAULT_METADATA = {
    b"filename": base64.b64encode(b"upload"),
    b"filetype": base64.b64encode(b"application/octet-stream"),
}


class UploadMetadataDefaults:
    """ASGI middleware: tus makes ``Upload-Metadata`` optional, tuspyserver needs a
    ``filename`` and a ``filetype`` in it; creations without them get neutral ones."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if (scope["type"] == "http" and scope["method"] == "POST"
                and scope["path"].rstrip("/") == "/v1/uploads"):  # fmt: skip
            headers = [(k, v) for k, v in scope["headers"] if k != b"upload-metadata"]
            given = dict(scope["headers"]).get(b"upload-metadata", b"")
            pairs = [p.strip() for p in given.split(b",") if p.strip()]
            keys = {p.split(b" ", 1)[0] for p in pairs}
            pairs += [k + b" " + v for k, v in _DEFAULT_METADATA.items() if k not in keys]
            headers.append((b"upload-metadata", b",".join(pairs)))
            scope = {**scope, "headers": headers}
        await self.app(scope, receive, send)
