"""Revisions of a job: a correction on one frame, re-propagated from the nearest stored
session record at or before it (DESIGN decision 3). Torch-free.

A revision names a frame, a label map of new or corrected objects on it (their pixels; the
other objects keep what the model propagates) and objects to forget from it. The job goes
back to the queue; its worker primes the session from the record history's nearest record
at or before the frame and resumes at the frame itself (the frames in between were never
memorised, so skipping them changes nothing), with every revision's correction applied on
its frame. Frames before the revision's frame are kept as they were; the ones from it on
are recomputed and replaced. Corrections stay: a later revision from an earlier frame
applies them again when it reaches their frames.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
from pydantic import BaseModel, Field, field_validator

from isvos.errors import IsvosError
from service.blobs import LocalBlobStore
from service.media.masks import read_indexed_png


class Revision(BaseModel):
    number: int = Field(description="1 for the first revision")
    frame: int = Field(description="the corrected frame; frames from it on were recomputed")
    objects: list[int] = Field(description="objects added or corrected on the frame")
    removed: list[int] = Field(description="objects forgotten from the frame on")
    created_at: float
    record_frame: int | None = Field(
        None, description="the session resumed from the record made before this frame "
        "(null: from the first frame)",
    )  # fmt: skip
    steps_before: int = Field(0, description="the job's model steps when it was created")
    mask_key: str = Field("", exclude=True)

    @field_validator("objects", "removed", mode="before")
    @classmethod
    def _lists(cls, value):
        return [] if value == {} else value  # Lua's cjson writes an empty list as {}

    @field_validator("record_frame", mode="before")
    @classmethod
    def _record(cls, value):
        return None if value is None or value < 0 else value


def job_revisions(job: dict[str, str]) -> list[Revision]:
    return [Revision.model_validate(r) for r in json.loads(job.get("revisions") or "[]")]


def check_revision(job: dict[str, str], frame: int, labels: np.ndarray | None,
                   remove: list[int], max_objects: int) -> list[int]:  # fmt: skip
    """The objects the revision adds or corrects; ``IsvosError`` when it cannot apply."""
    options = json.loads(job["options"])
    start, end, stride = options.get("start", 0), options.get("end"), options.get("stride", 1)
    frames = json.loads(job.get("video") or "{}").get("frames")
    bounds = [x for x in (end, frames) if x is not None]
    last = min(bounds) if bounds else None
    if frame < start or (last is not None and frame >= last) or (frame - start) % stride:
        raise IsvosError(
            "frame_range", f"frame {frame} is not one the job processes (start {start}, "
            f"stride {stride}, {'end ' + str(last) if last is not None else 'to the end'})",
        )  # fmt: skip
    known = set(json.loads(job.get("objects") or "[]"))
    for revision in job_revisions(job):
        known.update(revision.objects)
    corrected = [] if labels is None else [int(i) for i in np.unique(labels) if i]
    if not corrected and not remove:
        raise IsvosError("invalid_argument", "give masks of new or corrected objects, or "
                                             "objects to remove")  # fmt: skip
    unknown = sorted(set(remove) - known)
    if unknown:
        raise IsvosError("invalid_objects", f"cannot remove objects {unknown}: the job has "
                                            f"{sorted(known)}")  # fmt: skip
    both = sorted(set(remove) & set(corrected))
    if both:
        raise IsvosError("invalid_objects", f"objects {both} are both corrected and removed")
    objects = known | set(corrected)
    if len(objects) > max_objects:
        raise IsvosError(
            "too_many_objects", f"the job would hold {len(objects)} objects, over its limit of "
            f"{max_objects} (memory.max_objects)",
        )  # fmt: skip
    return corrected


def apply_revisions(prepared, revisions: list[Revision], blobs: LocalBlobStore):
    """``prepared`` (a ``PreparedVideo``) with every revision's correction merged into the
    prompts of its frame (per object: a later correction replaces an earlier mask) and its
    removals attached to its frame."""
    prompts = dict(prepared.prompts)
    removals: dict[int, tuple[int, ...]] = dict(prepared.removals)
    size = (prepared.info.height, prepared.info.width)
    objects = set(prepared.object_ids)
    for revision in revisions:
        if revision.mask_key:
            labels = read_indexed_png(blobs.local_path(revision.mask_key), size)
            prompts[revision.frame] = merge_labels(prompts.get(revision.frame), labels)
            objects.update(int(i) for i in np.unique(labels) if i)
        if revision.removed:
            removals[revision.frame] = tuple(
                sorted(set(removals.get(revision.frame, ())) | set(revision.removed))
            )
            if revision.frame in prompts:  # a removed object's old prompt there goes too
                left = np.where(np.isin(prompts[revision.frame], revision.removed), 0,
                                prompts[revision.frame]).astype(np.uint8)  # fmt: skip
                if left.any():
                    prompts[revision.frame] = left
                else:
                    del prompts[revision.frame]
    return replace(prepared, prompts=prompts, removals=removals, object_ids=sorted(objects))


def merge_labels(earlier: np.ndarray | None, later: np.ndarray) -> np.ndarray:
    """``later``'s objects replace theirs in ``earlier`` (whole objects, not pixels)."""
    if earlier is None:
        return later.copy()
    merged = np.where(np.isin(earlier, np.unique(later[later > 0])), 0, earlier)
    return np.where(later > 0, later, merged).astype(np.uint8)
