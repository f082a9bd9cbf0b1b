"""Instance proposals as a service: the gateway asks, a worker answers, through Redis.

The gateway is torch-free and holds no model. ``ask`` pushes a request (JSON, with the image
bytes under a short-lived key of their own) onto the ``proposals`` list and waits on a reply
list. Every worker runs ``serve_proposals`` beside its jobs: it takes requests with BLPOP,
decodes the image (or the job's frame), computes the proposals on its backend
(``Backend.propose``, then ``isvos.proposals``) and pushes the answer. A request still
waiting at its deadline is dropped by the worker and answered 503 by the gateway.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
import uuid
from dataclasses import asdict, dataclass

import numpy as np
import redis.asyncio as aioredis
from PIL import Image
from pydantic import BaseModel, Field

from isvos.errors import IsvosError
from isvos.processing import processing_size, resize_frame
from isvos.proposals import make_proposals
from service.keys import Keys
from service.logs import log_event
from service.media.errors import MediaError
from service.media.limits import MediaLimits
from service.media.rle import encode_rle
from service.media.video import iter_frames
from service.redis_server import REDIS_DOWN

log = logging.getLogger("isvos.proposals")
REPLY_TTL_S = 60
MAX_PROPOSALS = 50


class Rle(BaseModel):
    size: list[int] = Field(description="[height, width]")
    counts: str = Field(description="COCO compressed RLE, column-major")


class ProposalOut(BaseModel):
    id: int = Field(description="rank, from 1")
    score: float = Field(description="object probability x mean mask probability")
    area: int
    bbox: list[int] = Field(description="[x, y, width, height]")
    rle: Rle
    for_point: bool = Field(
        False,
        description="a whole query mask chosen for (x, y) when no "
        "ranked proposal covers it; may overlap",
    )


class Proposals(BaseModel):
    """Ranked, non-overlapping instance masks of one image at its own size."""

    width: int
    height: int
    processing_size: list[int] = Field(description="[height, width] the model saw")
    job_id: str | None = None
    frame: int | None = None
    proposals: list[ProposalOut]
    selected: int | None = Field(None, description="id of the proposal under (x, y), if any")


@dataclass
class ProposalQuery:
    """One request on the queue (JSON)."""

    request_id: str
    deadline: float  # time.time() after which nobody waits for the answer
    short_side: int | None
    max_proposals: int = 20
    point: tuple[int, int] | None = None  # (x, y) at the image's size
    image_key: str | None = None  # Redis key of the image bytes
    video: str | None = None  # a job's video file (blob path) ...
    frame: int | None = None  # ... and the frame to propose on
    job_id: str | None = None


async def ask(redis: aioredis.Redis, keys: Keys, query: ProposalQuery,
              image: bytes | None, timeout_s: float) -> Proposals:  # fmt: skip
    """Queue ``query`` and wait for a worker's answer (``unavailable`` after ``timeout_s``)."""
    reply_key = keys.proposal_reply(query.request_id)
    async with redis.pipeline(transaction=True) as pipe:
        if image is not None:
            query.image_key = keys.proposal_image(query.request_id)
            pipe.set(query.image_key, image, ex=max(1, int(timeout_s) + 5))
        pipe.rpush(keys.proposal_requests, json.dumps(asdict(query)))
        await pipe.execute()
    answer = await redis.blpop([reply_key], timeout=timeout_s)
    if answer is None:
        await redis.delete(keys.proposal_image(query.request_id))
        raise IsvosError(
            "unavailable", f"no worker answered the proposal request within {timeout_s:g} s"
        )
    body = json.loads(answer[1])
    if "error" in body:
        raise IsvosError(body["error"]["code"], body["error"]["message"])
    return Proposals.model_validate(body)


async def serve_proposals(redis: aioredis.Redis, keys: Keys, backend, limits: MediaLimits,
                          default_short_side: int, stop: asyncio.Event) -> None:  # fmt: skip
    """Answer proposal requests until ``stop`` (one at a time; a worker task)."""
    while not stop.is_set():
        try:
            item = await redis.blpop([keys.proposal_requests], timeout=1)
        except REDIS_DOWN:  # Redis restarting: wait, then take requests again
            await asyncio.sleep(1.0)
            continue
        if item is None:
            continue
        try:
            query = ProposalQuery(**json.loads(item[1]))
        except (TypeError, ValueError):
            log_event(log, "proposal_malformed", logging.WARNING)
            continue
        if query.deadline < time.time():
            continue  # the gateway stopped waiting
        started = time.perf_counter()
        try:
            image = await _image(redis, query, limits)
            body = (await propose_image(backend, image, query, default_short_side)).model_dump()
        except IsvosError as exc:
            body = {"error": {"code": exc.code, "message": exc.message}}
        except Exception as exc:  # noqa: BLE001 - a bug: answered, the worker goes on
            log.exception("proposal request %s failed", query.request_id)
            body = {"error": {"code": "internal", "message": f"{type(exc).__name__}: {exc}"}}
        reply_key = keys.proposal_reply(query.request_id)
        async with redis.pipeline(transaction=True) as pipe:
            pipe.rpush(reply_key, json.dumps(body))
            pipe.expire(reply_key, REPLY_TTL_S)
            if query.image_key:
                pipe.delete(query.image_key)
            await pipe.execute()
        log_event(log, "proposals_answered", trace_id=query.job_id,
                  ms=round((time.perf_counter() - started) * 1e3, 1),
                  error=body.get("error", {}).get("code"))  # fmt: skip


async def propose_image(backend, image: np.ndarray, query: ProposalQuery,
                        default_short_side: int) -> Proposals:  # fmt: skip
    """Proposals of an RGB image at its own size (the model sees it at the processing size)."""
    height, width = image.shape[:2]
    psize = processing_size(height, width, query.short_side or default_short_side)
    objectness, probabilities = await backend.propose(resize_frame(image, psize))
    found, hit = await asyncio.to_thread(
        make_proposals, objectness, probabilities, psize, (height, width),
        max_proposals=query.max_proposals, point=query.point,
    )  # fmt: skip
    out = []
    for rank, proposal in enumerate(found, start=1):
        rle = encode_rle(proposal.mask.astype(np.uint8), [1])[0]["segmentation"]
        out.append(ProposalOut(id=rank, score=proposal.score, area=proposal.area,
                               bbox=list(proposal.bbox), rle=Rle(**rle),
                               for_point=proposal.for_point))  # fmt: skip
    selected = None if hit is None else hit + 1
    return Proposals(width=width, height=height, processing_size=list(psize),
                     job_id=query.job_id, frame=query.frame, proposals=out,
                     selected=selected)  # fmt: skip


async def _image(redis: aioredis.Redis, query: ProposalQuery, limits: MediaLimits) -> np.ndarray:
    if query.image_key is not None:
        data = await redis.get(query.image_key)
        if data is None:
            raise IsvosError("not_found", "the image of the request expired; send it again")
        return await asyncio.to_thread(decode_image, data, limits)
    if query.video is None or query.frame is None:
        raise IsvosError("invalid_argument", "give an image, or a job id and a frame index")

    def frame() -> np.ndarray:
        for decoded in iter_frames(query.video, limits, query.frame, query.frame + 1, 1, 1):
            return decoded.image
        raise MediaError("frame_range", f"the video has no frame {query.frame}")

    return await asyncio.to_thread(frame)


def decode_image(data: bytes, limits: MediaLimits) -> np.ndarray:
    """RGB uint8 of a PNG/JPEG/WebP image; its size is checked from the header first."""
    try:
        image = Image.open(io.BytesIO(data))
        if image.width > limits.max_width or image.height > limits.max_height:
            raise MediaError(
                "dimensions_too_large",
                f"the image is {image.width}x{image.height}, over the limit of "
                f"{limits.max_width}x{limits.max_height}",
            )
        return np.asarray(image.convert("RGB"))
    except MediaError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise MediaError("image_unreadable", f"not a readable image: {exc}") from exc


def new_request_id() -> str:
    return uuid.uuid4().hex
