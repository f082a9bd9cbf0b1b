"""Turning an upload into a job: options checked, video probed and masks validated with the
code ``isvos segment`` uses, then the job created in Redis (or the same job returned for a
repeated ``Idempotency-Key``). Bad input is refused here, before any worker sees it."""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path

from pydantic import ValidationError

from isvos.config import get_config
from isvos.errors import IsvosError
from service.api.deps import Gateway
from service.api.upload import JobForm
from service.blobs import job_prefix
from service.jobs.models import JobOptions
from service.media.video import check_complete
from service.segment import SegmentRequest, prepare_video

_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")


def parse_options(text: str | None, gw: Gateway) -> JobOptions:
    try:
        options = JobOptions.model_validate_json(text or "{}")
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "options"
        raise IsvosError("invalid_argument", f"options: {where}: {first['msg']}") from None
    served = gw.settings.backend.config
    if options.config is not None and options.config != served:
        raise IsvosError(
            "invalid_argument", f"options.config {options.config!r}: this service runs {served!r}"
        )
    given_size = options.size
    options = options.with_preset(get_config(served).default_short_side)
    limit = gw.settings.limits.max_short_side
    if options.size > limit:
        what = "options.size" if given_size else f"preset {options.preset!r}'s size"
        raise IsvosError("invalid_size", f"{what} {options.size} is over the limit of {limit}")
    return options


def take_upload(gw: Gateway, owner: str, upload_id: str, job_id: str) -> tuple[str, int]:
    """Move a finished tus upload of ``owner`` into the job's folder; (blob key, bytes)."""
    data, size = finished_upload(gw, owner, upload_id)
    key = f"{job_prefix(job_id)}/input/video"
    target = gw.blobs.local_path(key)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(data, target)
    (data.parent / f"{upload_id}.info").unlink(missing_ok=True)
    return key, size


def finished_upload(gw: Gateway, owner: str, upload_id: str) -> tuple[Path, int]:
    """The file of a finished tus upload of ``owner`` and its size (``not_found`` for
    another key's or a malformed id, ``failed_precondition`` while it is incomplete)."""
    if not _UPLOAD_ID.match(upload_id):
        raise IsvosError("not_found", "no such upload")
    folder = Path(gw.uploads_dir) / owner
    data, info = folder / upload_id, folder / f"{upload_id}.info"
    try:
        params = json.loads(info.read_text())
    except (OSError, ValueError):
        raise IsvosError("not_found", f"no upload {upload_id!r}") from None
    size = params.get("size")
    if size is None or params.get("offset") != size or not data.is_file():
        raise IsvosError(
            "failed_precondition",
            f"upload {upload_id} is not complete ({params.get('offset')} of {size} bytes)",
        )
    if size > gw.settings.limits.max_upload_bytes:
        raise IsvosError("video_too_large", "the upload is over the size limit")
    return data, size


async def validate(gw: Gateway, form: JobForm, options: JobOptions) -> dict[str, str]:
    """Probe the video and load the masks as a worker will; the job's stored fields."""
    if not form.mask_keys:
        raise IsvosError("invalid_argument", "give the first-frame masks as 'masks' file(s)")
    masks = [gw.blobs.local_path(k) for k in form.mask_keys]
    request = SegmentRequest(
        video=gw.blobs.local_path(form.video_key),
        masks=masks[0] if len(masks) == 1 else masks,
        out_dir=Path(os.devnull),
        short_side=options.size or get_config(gw.settings.backend.config).default_short_side,
        memory_options=options.memory.model_dump(),
        start=options.start, end=options.end, stride=options.stride,
        resize_masks=options.resize_masks, limits=gw.settings.limits.media(),
    )  # fmt: skip
    prepared = await asyncio.to_thread(prepare_video, request)
    await asyncio.to_thread(check_complete, request.video, request.limits)
    info = prepared.info
    video = {"width": info.width, "height": info.height, "fps": info.fps,
             "frames": info.frame_count, "codec": info.codec}  # fmt: skip
    return {
        "options": options.model_dump_json(),
        "video_key": form.video_key,
        "video_name": form.video_name,
        "mask_keys": json.dumps(form.mask_keys),
        "video": json.dumps(video),
        "frames_total": "" if prepared.total is None else str(prepared.total),
        "objects": json.dumps(prepared.object_ids),
    }
