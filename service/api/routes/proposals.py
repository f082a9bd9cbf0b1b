"""``/v1/proposals``: instance masks of an image or of a job's frame (thin route; the work is
a worker's, through ``service.proposals``)."""

from __future__ import annotations

import json
import time
from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile

from isvos.errors import IsvosError
from isvos.limits import MIN_PROCESSING_SIDE
from service.api.deps import GatewayDep, PrincipalDep, owned_job
from service.api.routes.jobs import ERRORS
from service.jobs.models import check_frame_index, video_frames
from service.jobs.submit import finished_upload
from service.proposals import MAX_PROPOSALS, ProposalQuery, Proposals, ask, new_request_id

router = APIRouter(prefix="/v1/proposals", tags=["proposals"])
CHUNK = 1 << 20


@router.post("", response_model=Proposals, responses=ERRORS,
             summary="Instance masks from the model's instance branch, ranked")  # fmt: skip
async def proposals(
    gw: GatewayDep,
    who: PrincipalDep,
    image: Annotated[UploadFile | None, File(description="PNG, JPEG or WebP image")] = None,
    job_id: Annotated[str | None, Form(description="a job whose frame to use")] = None,
    upload_id: Annotated[
        str | None, Form(description="a finished upload whose frame to use")
    ] = None,  # fmt: skip
    frame: Annotated[int | None, Form(ge=0, description="the job's frame index")] = None,
    x: Annotated[
        int | None, Form(ge=0, description="a pixel: 'selected' is the proposal covering it")
    ] = None,
    y: Annotated[int | None, Form(ge=0)] = None,
    size: Annotated[
        int | None, Form(ge=MIN_PROCESSING_SIDE, description="processing short side")
    ] = None,
    max_proposals: Annotated[int, Form(ge=1, le=MAX_PROPOSALS)] = 20,
) -> Proposals:
    """Give ``image``, or ``frame`` of a job (``job_id``) or of a finished upload
    (``upload_id``). Masks are COCO RLE at the image's (the
    video's) size, non-overlapping, best first; with ``x`` and ``y``, ``selected`` names the
    one covering that pixel (click to select)."""
    settings = gw.settings
    if size is not None and size > settings.limits.max_short_side:
        raise IsvosError(
            "invalid_size", f"size {size} is over the limit of {settings.limits.max_short_side}"
        )
    if (x is None) != (y is None):
        raise IsvosError("invalid_argument", "give both x and y, or neither")
    query = ProposalQuery(
        request_id=new_request_id(), deadline=time.time() + settings.jobs.proposals_timeout_s,
        short_side=size, max_proposals=max_proposals,
        point=None if x is None else (x, y),
    )  # fmt: skip
    data = None
    if image is not None:
        if job_id is not None or upload_id is not None or frame is not None:
            raise IsvosError("invalid_argument", "give an image or a video's frame, not both")
        data = await read_limited(image, settings.limits.max_image_bytes, "image")
    elif upload_id is not None and frame is not None:
        path, _ = finished_upload(gw, who.owner, upload_id)
        query.video, query.frame = str(path), frame
    elif job_id is not None and frame is not None:
        job = await owned_job(job_id, gw, who)
        check_frame_index(frame, video_frames(job))
        query.video = str(gw.blobs.local_path(job["video_key"]))
        query.frame, query.job_id = frame, job_id
        if size is None:
            query.short_side = json.loads(job["options"]).get("size")
    else:
        raise IsvosError(
            "invalid_argument", "give 'image', or 'frame' with 'job_id' or 'upload_id'"
        )
    return await ask(gw.redis, gw.keys, query, data, settings.jobs.proposals_timeout_s)


async def read_limited(upload: UploadFile, limit: int, what: str) -> bytes:
    """An uploaded file's bytes, refused once they pass ``limit`` or when there are none
    (``{what}_unreadable``: ``what`` is "image" or "mask")."""
    parts, total = [], 0
    while chunk := await upload.read(CHUNK):
        total += len(chunk)
        if total > limit:
            raise IsvosError("video_too_large", f"the {what} is over the limit of {limit} bytes")
        parts.append(chunk)
    if not total:
        raise IsvosError(f"{what}_unreadable", f"the {what} is empty")
    return b"".join(parts)
