"""``/v1/jobs/{id}/revisions``: correct a frame of a finished job and re-propagate from it
(``service.jobs.revisions``; thin route)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Annotated

from fastapi import APIRouter, File, Form, Response, UploadFile

from isvos.errors import IsvosError
from service.api.deps import GatewayDep, PrincipalDep, owned_job
from service.api.routes.jobs import ERRORS, public_job
from service.api.routes.proposals import read_limited
from service.blobs import job_prefix
from service.jobs.models import JobOptions, JobPublic
from service.jobs.revisions import check_revision
from service.media.masks import encode_indexed_png, read_indexed_png

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.post(
    "/{job_id}/revisions", status_code=202, response_model=JobPublic, responses=ERRORS,
    summary="Correct a frame and re-propagate from it",
)  # fmt: skip
async def revise_job(
    job_id: str,
    response: Response,
    gw: GatewayDep,
    who: PrincipalDep,
    frame: Annotated[int, Form(ge=0, description="the video frame to correct")],
    masks: Annotated[
        UploadFile | None,
        File(
            description="label map at the video's size (indexed PNG, DAVIS-palette or grey "
            "RGB): the new or corrected objects; 0 elsewhere"
        ),
    ] = None,  # fmt: skip
    remove: Annotated[
        str, Form(description="object ids to forget from the frame on, as a JSON list")
    ] = "[]",  # fmt: skip
) -> JobPublic:
    """The job (it must have succeeded) goes back to the queue as a new revision: it resumes
    from the nearest stored session record at or before ``frame``, with the correction on
    ``frame``; frames from ``frame`` on are recomputed and replaced, earlier ones are kept.
    Results are remade when it succeeds again."""
    job = await owned_job(job_id, gw, who)
    removed = _id_list(remove)
    video = json.loads(job.get("video") or "{}")
    size = (int(video.get("height", 0)), int(video.get("width", 0)))
    labels = None
    if masks is not None:
        data = await read_limited(masks, gw.settings.limits.max_mask_bytes, "mask")
        labels = await asyncio.to_thread(read_indexed_png, data, size)
    options = JobOptions.model_validate_json(job["options"])
    corrected = check_revision(job, frame, labels, removed, options.memory.max_objects)
    mask_key = ""
    if corrected:
        mask_key = f"{job_prefix(job_id)}/revisions/{uuid.uuid4().hex}.png"
        await asyncio.to_thread(gw.blobs.put, mask_key, encode_indexed_png(labels))
    revision = {"frame": frame, "objects": corrected, "removed": removed,
                "created_at": time.time(), "mask_key": mask_key}  # fmt: skip
    limits = gw.settings.limits
    outcome, number, _, status = await gw.store.revise(
        job_id, frame, revision, max_queued=limits.max_queued_jobs,
        max_active=limits.max_active_jobs,
    )  # fmt: skip
    if outcome != "revised" and mask_key:
        await asyncio.to_thread(gw.blobs.delete, mask_key)
    if outcome == "missing":
        raise IsvosError("not_found", f"no job {job_id!r}")
    if outcome == "status":
        raise IsvosError("failed_precondition",
                         f"the job is {status}: revise it once it has succeeded")  # fmt: skip
    if outcome == "limit":
        raise IsvosError("rate_limited", "this key has too many queued or active jobs; "
                                         "retry later")  # fmt: skip
    response.headers["Location"] = f"/v1/jobs/{job_id}"
    job = await gw.store.get(job_id)
    if job is None:
        raise IsvosError("not_found", f"job {job_id} was deleted")
    return public_job(job)


def _id_list(text: str) -> list[int]:
    try:
        ids = json.loads(text)
    except ValueError:
        ids = None
    if not isinstance(ids, list) or not all(isinstance(i, int) and 1 <= i <= 255 for i in ids):
        raise IsvosError("invalid_argument", f"remove must be a JSON list of object ids "
                                             f"1..255, got {text[:80]!r}")  # fmt: skip
    return sorted(set(ids))
