"""Frames of a video as images, and what an upload's video is: what the web page shows while
the objects are marked and the masks reviewed (thin routes; ``service.media.frames``)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from pydantic import BaseModel

from isvos.errors import IsvosError
from service.api.deps import GatewayDep, PrincipalDep, owned_job
from service.api.routes.jobs import ERRORS
from service.jobs.models import check_frame_index, video_frames
from service.jobs.submit import finished_upload
from service.media.video import probe_video

router = APIRouter(tags=["media"])
JPEG = {**ERRORS, 200: {"content": {"image/jpeg": {}}}}
CACHE = {"Cache-Control": "private, max-age=3600"}


class VideoOut(BaseModel):
    width: int
    height: int
    fps: float | None
    frames: int | None
    duration_s: float | None
    codec: str


@router.get("/v1/uploads/{upload_id}/video", response_model=VideoOut, responses=ERRORS,
            summary="What a finished upload's video is")  # fmt: skip
async def upload_video(upload_id: str, gw: GatewayDep, who: PrincipalDep) -> VideoOut:
    path, _ = finished_upload(gw, who.owner, upload_id)
    info = await asyncio.to_thread(probe_video, path, gw.settings.limits.media())
    return VideoOut(width=info.width, height=info.height, fps=info.fps, frames=info.frame_count,
                    duration_s=info.duration_s, codec=info.codec)  # fmt: skip


@router.get("/v1/uploads/{upload_id}/frames/{index}.jpg", responses=JPEG,
            summary="One frame of a finished upload's video (JPEG)")  # fmt: skip
async def upload_frame(upload_id: str, index: int, gw: GatewayDep, who: PrincipalDep):
    path, _ = finished_upload(gw, who.owner, upload_id)
    check_frame_index(index, None)  # past the end: the decoder says so
    return await _jpeg(gw, path, index)


@router.get("/v1/jobs/{job_id}/video/{index}.jpg", responses=JPEG,
            summary="One frame of a job's video (JPEG), as the masks see it")  # fmt: skip
async def job_video_frame(job_id: str, index: int, gw: GatewayDep, who: PrincipalDep):
    job = await owned_job(job_id, gw, who)
    check_frame_index(index, video_frames(job))
    return await _jpeg(gw, gw.blobs.local_path(job["video_key"]), index)


async def _jpeg(gw, path, index: int) -> Response:
    if not path.is_file():
        raise IsvosError("not_found", "the video was deleted")
    data = await asyncio.to_thread(gw.frames.jpeg, path, index)
    return Response(data, media_type="image/jpeg", headers=CACHE)
