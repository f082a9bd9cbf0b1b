"""``/v1/jobs``: submit, list, read, follow, download and delete jobs (thin routes)."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import FileResponse
from sse_starlette import EventSourceResponse

from isvos.errors import IsvosError
from service.api.deps import GatewayDep, PrincipalDep, owned_job
from service.api.metrics import UPLOAD_BYTES
from service.api.upload import JobFormReader
from service.blobs import job_prefix
from service.jobs.models import (
    OUTPUT_FILES,
    ErrorBody,
    JobList,
    JobPublic,
    JobStatus,
    check_frame_index,
    video_frames,
)
from service.jobs.submit import parse_options, take_upload, validate
from service.worker.outputs import frame_key, output_key

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

ERRORS = {s: {"model": ErrorBody} for s in (400, 401, 404, 409, 413, 415, 422, 429, 503)}
# The multipart body, documented by hand (the route streams it itself).
SUBMIT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "video": {"type": "string", "format": "binary",
                                  "description": "the video (mp4, mov, webm, mkv, avi)"},
                        "upload_id": {"type": "string",
                                      "description": "a finished resumable upload, instead "
                                                     "of 'video'"},
                        "masks": {"type": "array",
                                  "items": {"type": "string", "format": "binary"},
                                  "description": "an indexed PNG, binary PNGs (one per "
                                                 "object) or COCO RLE JSON"},
                        "options": {"type": "string",
                                    "description": "JobOptions as JSON"},
                    },
                    "required": ["masks"],
                }
            }
        },
    }
}  # fmt: skip
# Seconds a deleted job's folder is removed again (a worker's last frame in flight).
DELETE_GRACE_S = 3.0


def public_job(job: dict[str, str]) -> JobPublic:
    return JobPublic.from_hash(job, "")


@router.post(
    "", status_code=202, response_model=JobPublic, responses=ERRORS, openapi_extra=SUBMIT_BODY,
    summary="Submit a video and its first-frame masks",
)  # fmt: skip
async def submit_job(
    request: Request,
    response: Response,
    gw: GatewayDep,
    who: PrincipalDep,
    idempotency_key: Annotated[str | None, Header(max_length=256)] = None,
) -> JobPublic:
    store, limits = gw.store, gw.settings.limits
    if idempotency_key:
        existing = await gw.redis.get(gw.keys.idempotency(who.owner, idempotency_key))
        if existing and (job := await store.get(existing.decode())) is not None:
            response.headers["Location"] = f"/v1/jobs/{job['id']}"
            return public_job(job)
    queued, active = await store.count_owner(who.owner)
    if queued >= limits.max_queued_jobs or active >= limits.max_active_jobs:
        raise IsvosError("rate_limited", _limit_message(queued, active, limits))
    job_id = store.new_id()
    prefix = job_prefix(job_id)
    reader = JobFormReader(
        gw.blobs, prefix, max_video_bytes=limits.max_upload_bytes,
        max_mask_bytes=limits.max_mask_bytes, max_mask_files=limits.max_mask_files,
    )  # fmt: skip
    try:
        form = await reader.read(request)
        UPLOAD_BYTES.inc(form.video_bytes)
        options = parse_options(form.fields.get("options"), gw)
        if form.video_key is None and "upload_id" in form.fields:
            form.video_key, _ = await asyncio.to_thread(
                take_upload, gw, who.owner, form.fields["upload_id"], job_id
            )
        if form.video_key is None:
            raise IsvosError("invalid_argument", "give the video as 'video' or 'upload_id'")
        fields = await validate(gw, form, options)
        outcome = await store.create(
            job_id, who.owner, fields, idempotency_key=idempotency_key,
            max_queued=limits.max_queued_jobs, max_active=limits.max_active_jobs,
        )  # fmt: skip
    except BaseException:
        await asyncio.to_thread(gw.blobs.delete_prefix, prefix)
        raise
    if outcome.kind != "created":
        await asyncio.to_thread(gw.blobs.delete_prefix, prefix)
    if outcome.kind == "limit":
        queued, active = await store.count_owner(who.owner)
        raise IsvosError("rate_limited", _limit_message(queued, active, limits))
    job = await store.get(outcome.value)
    if job is None:  # deleted in the moment since
        raise IsvosError("not_found", f"job {outcome.value} was deleted")
    response.headers["Location"] = f"/v1/jobs/{outcome.value}"
    return public_job(job)


def _limit_message(queued: int, active: int, limits) -> str:
    return (
        f"this key has {queued} queued and {active} active jobs (limits "
        f"{limits.max_queued_jobs} queued, {limits.max_active_jobs} active); retry later"
    )


@router.get("", response_model=JobList, responses=ERRORS, summary="The caller's jobs")
async def list_jobs(
    gw: GatewayDep,
    who: PrincipalDep,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[float | None, Query(description="next_cursor of the previous page")] = None,
) -> JobList:
    jobs, next_cursor = await gw.store.list(
        who.owner, status=status.value if status else None, cursor=cursor, limit=limit
    )
    return JobList(
        jobs=[public_job(j) for j in jobs],
        next_cursor=None if next_cursor is None else repr(next_cursor),
    )


@router.get("/{job_id}", response_model=JobPublic, responses=ERRORS, summary="One job")
async def get_job(job_id: str, gw: GatewayDep, who: PrincipalDep) -> JobPublic:
    return public_job(await owned_job(job_id, gw, who))


@router.get(
    "/{job_id}/events", responses=ERRORS,
    response_class=EventSourceResponse, summary="Progress as server-sent events",
)  # fmt: skip
async def job_events(
    job_id: str,
    gw: GatewayDep,
    who: PrincipalDep,
    last_event_id: Annotated[str | None, Header(max_length=64)] = None,
):
    """``progress`` events, then one ``status`` event with the final status. A reconnect
    with ``Last-Event-ID`` resumes after that event, with no gap and no repeat."""
    await owned_job(job_id, gw, who)
    after = last_event_id if last_event_id and _stream_id(last_event_id) else "0"

    async def events():
        nonlocal after
        while True:
            batch = await gw.store.events(job_id, after, block_ms=1000)
            for entry_id, fields in batch:
                after = entry_id
                yield {"id": entry_id, "event": fields.get("type", "progress"),
                       "data": json.dumps(fields)}  # fmt: skip
                if fields.get("type") == "status" and JobStatus(fields["status"]).terminal:
                    return
            if not batch:
                job = await gw.store.get(job_id)
                if job is None or JobStatus(job["status"]).terminal:
                    return  # deleted, or a reconnect after the final event

    return EventSourceResponse(events(), ping=15)


@router.get(
    "/{job_id}/result", responses={**ERRORS, 200: {"content": {
        "application/zip": {}, "application/json": {}, "video/mp4": {}, "image/png": {}}}},
    summary="A result file of a finished job (Range requests honoured)",
)  # fmt: skip
async def job_result(
    job_id: str,
    gw: GatewayDep,
    who: PrincipalDep,
    format: Literal["png_zip", "rle_json", "overlay_mp4", "preview_png"] = "png_zip",  # noqa: A002
):
    job = await owned_job(job_id, gw, who)
    if job["status"] != JobStatus.succeeded:
        raise IsvosError(
            "failed_precondition",
            f"the job is {job['status']}; results are there once it has succeeded",
        )
    if format not in json.loads(job.get("outputs_ready") or "[]"):
        raise IsvosError("not_found", f"the job made no {format}: ask for it in options.outputs")
    name, media_type = OUTPUT_FILES[format]
    return _file(gw.blobs.local_path(output_key(job_id, format)), media_type, f"{job_id}-{name}")


def _file(path, media_type: str, filename: str | None = None) -> FileResponse:
    """A ranged file response; a file deleted meanwhile (a DELETE racing) is not found."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        raise IsvosError("not_found", "the file was deleted") from None
    return FileResponse(path, media_type=media_type, filename=filename, stat_result=stat)


@router.get(
    "/{job_id}/frames/{index}.png", responses={**ERRORS, 200: {"content": {"image/png": {}}}},
    summary="One frame's masks (indexed PNG) as soon as it is written",
)  # fmt: skip
async def job_frame(job_id: str, index: int, gw: GatewayDep, who: PrincipalDep):
    job = await owned_job(job_id, gw, who)
    check_frame_index(index, video_frames(job), past_end="not_found")
    key = frame_key(job_id, index)
    if gw.blobs.exists(key):
        return _file(gw.blobs.local_path(key), "image/png")
    raise IsvosError(
        "not_found", f"frame {index} is not written (yet, or not processed: start/stride)"
    )


@router.delete("/{job_id}", status_code=204, responses=ERRORS, summary="Cancel and delete")
async def delete_job(job_id: str, gw: GatewayDep, who: PrincipalDep) -> Response:
    """Cancels the job if it runs (its worker stops within about a second) and deletes its
    keys and files: upload, masks, frames, results, record."""
    await owned_job(job_id, gw, who)
    await gw.store.cancel(job_id)
    await gw.store.delete(job_id)
    await asyncio.to_thread(gw.blobs.delete_prefix, job_prefix(job_id))
    task = asyncio.create_task(_delete_again(gw, job_id))
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)
    return Response(status_code=204)


_BACKGROUND: set[asyncio.Task] = set()


async def _delete_again(gw, job_id: str) -> None:
    """A worker may commit one last frame while it learns the job is gone."""
    await asyncio.sleep(DELETE_GRACE_S)
    if await gw.store.get(job_id) is None:
        await asyncio.to_thread(gw.blobs.delete_prefix, job_prefix(job_id))


def _stream_id(text: str) -> bool:
    head, _, tail = text.partition("-")
    return head.isdigit() and tail.isdigit() and len(text) < 42
