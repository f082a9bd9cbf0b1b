"""Jobs: status, options and the public view (torch-free, no I/O)."""

from __future__ import annotations

import enum
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from isvos.errors import IsvosError
from isvos.limits import MAX_OBJECT_ID, MIN_PROCESSING_SIDE
from isvos.presets import DEFAULT_PRESET, PresetName
from isvos.presets import resolve as resolve_preset
from service.jobs.revisions import Revision, job_revisions


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


OutputFormat = Literal["png_zip", "rle_json", "overlay_mp4", "preview_png"]
OUTPUT_FILES: dict[str, tuple[str, str]] = {
    "png_zip": ("masks.zip", "application/zip"),
    "rle_json": ("masks.json", "application/json"),
    "overlay_mp4": ("overlay.mp4", "video/mp4"),
    "preview_png": ("preview.png", "image/png"),
}


class MemoryOptionsModel(BaseModel):
    """The memory policy of the job's session (spec §1.8, DESIGN decision 5)."""

    model_config = ConfigDict(extra="forbid")

    max_memory_frames: int = Field(16, ge=2, le=128, description="memory capacity in frames")
    mem_every: int = Field(5, ge=1, le=1000, description="memorise every N-th step")
    top_k: int = Field(20, ge=1, le=10_000, description="top-k of the memory read")
    max_objects: int = Field(16, ge=1, le=MAX_OBJECT_ID, description="objects the job may hold")


class JobOptions(BaseModel):
    """What to compute. Unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")

    config: str | None = Field(None, description="model config; must be the one served")
    size: int | None = Field(
        None, ge=MIN_PROCESSING_SIDE, description="processing short side (default: the preset's)"
    )
    start: int = Field(0, ge=0, description="first frame to process")
    end: int | None = Field(None, ge=1, description="stop before this frame")
    stride: int = Field(1, ge=1, le=1000, description="process every N-th frame")
    resize_masks: bool = Field(False, description="resize masks of another size to the video")
    preset: PresetName | None = Field(
        None,
        description="fast | balanced | accurate (default balanced): the processing size and "
        "memory options of a measured trade-off; an explicit size or memory field wins",
    )
    memory: MemoryOptionsModel = MemoryOptionsModel()
    outputs: list[OutputFormat] = Field(
        default_factory=lambda: ["png_zip", "rle_json"],
        description="result files made when the job succeeds (frames are always kept)",
    )

    def with_preset(self, config_short_side: int) -> JobOptions:
        """These options with the preset applied: ``size`` and the memory fields the caller
        left out take the preset's values (call on options parsed from the caller's JSON)."""
        explicit = {k: getattr(self.memory, k) for k in self.memory.model_fields_set}
        size, memory = resolve_preset(self.preset, config_short_side, short_side=self.size,
                                      memory=explicit)  # fmt: skip
        memory["max_objects"] = self.memory.max_objects
        return self.model_copy(update={
            "preset": self.preset or DEFAULT_PRESET, "size": size,
            "memory": MemoryOptionsModel(**memory),
        })  # fmt: skip

    @model_validator(mode="after")
    def _range(self) -> JobOptions:
        if self.end is not None and self.end <= self.start:
            raise ValueError(f"end {self.end} must be after start {self.start}")
        self.outputs = list(dict.fromkeys(self.outputs))
        return self


class JobLinks(BaseModel):
    self: str
    events: str
    result: str
    frames: str


class JobError(BaseModel):
    code: str
    message: str


class JobPublic(BaseModel):
    """A job as the API shows it."""

    id: str
    status: JobStatus
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    first_frame_at: float | None = Field(None, description="when the first mask was written")
    last_frame_at: float | None = Field(None, description="when the last mask was written")
    frames_done: int = 0
    frames_total: int | None = None
    fps: float | None = Field(None, description="frames per second of the current run")
    video: dict = Field(default_factory=dict, description="width, height, fps, frames")
    objects: list[int] = Field(default_factory=list, description="object ids, revisions too")
    options: JobOptions
    attempts: int = 0
    steps: int = Field(0, description="frames the model computed, over every run and revision")
    revision: int = Field(0, description="the current revision (0: the job as submitted)")
    revisions: list[Revision] = Field(default_factory=list)
    error: JobError | None = None
    outputs: list[str] = Field(default_factory=list, description="result formats available")
    links: JobLinks

    @classmethod
    def from_hash(cls, data: dict[str, str], base: str) -> JobPublic:
        job_id = data["id"]
        error = None
        if data.get("error_code"):
            error = JobError(code=data["error_code"], message=data.get("error_message", ""))
        return cls(
            id=job_id,
            status=JobStatus(data["status"]),
            created_at=float(data["created_at"]),
            started_at=_float(data.get("started_at")),
            finished_at=_float(data.get("finished_at")),
            first_frame_at=_float(data.get("first_frame_at")),
            last_frame_at=_float(data.get("last_frame_at")),
            frames_done=int(data.get("frames_done") or 0),
            frames_total=_int(data.get("frames_total")),
            fps=_float(data.get("fps")),
            video=json.loads(data.get("video") or "{}"),
            objects=_objects(data),
            options=JobOptions.model_validate_json(data["options"]),
            attempts=int(data.get("attempts") or 0),
            steps=int(data.get("steps") or 0),
            revision=int(data.get("revision") or 0),
            revisions=job_revisions(data),
            error=error,
            outputs=json.loads(data.get("outputs_ready") or "[]"),
            links=JobLinks(
                self=f"{base}/v1/jobs/{job_id}",
                events=f"{base}/v1/jobs/{job_id}/events",
                result=f"{base}/v1/jobs/{job_id}/result",
                frames=f"{base}/v1/jobs/{job_id}/frames/{{n}}.png",
            ),
        )


class JobList(BaseModel):
    jobs: list[JobPublic]
    next_cursor: str | None = Field(None, description="pass as ?cursor= for the next page")


class ErrorBody(BaseModel):
    code: str
    message: str


def video_frames(job: dict[str, str]) -> int | None:
    """Frames the job's video declares (None when its container does not say)."""
    return json.loads(job.get("video") or "{}").get("frames")


def check_frame_index(index: int, frames: int | None, past_end: str = "frame_range") -> None:
    """``invalid_argument`` for a negative frame index; ``past_end`` for one at or after
    ``frames``."""
    if index < 0:
        raise IsvosError("invalid_argument", "frame indices start at 0")
    if frames is not None and index >= frames:
        raise IsvosError(past_end, f"frame {index} is past the end (the video has {frames})")


def _objects(data: dict[str, str]) -> list[int]:
    ids = set(json.loads(data.get("objects") or "[]"))
    for revision in job_revisions(data):
        ids.update(revision.objects)
    return sorted(ids)


def _float(value: str | None) -> float | None:
    return float(value) if value not in (None, "") else None


def _int(value: str | None) -> int | None:
    return int(value) if value not in (None, "") else None
