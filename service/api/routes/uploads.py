"""Resumable uploads (the tus 1.0 protocol, ``tuspyserver``) under ``/v1/uploads``.

Each API key has its own upload folder: another key's upload id is not found. A finished
upload becomes a job's video with ``POST /v1/jobs`` and ``upload_id``; unused uploads
expire after the job retention time.
"""

from __future__ import annotations

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
