"""The one segmentation loop: resume from a persisted record, cancellation, progress, video
frame indices, objects removed mid-run (local backend, frames in memory)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from isvos.errors import IsvosError
from isvos.processing import resize_frame
from service.media.base import Frame
from service.records import DirectoryRecordStore, MemoryRecordStore
from service.runner import CancelToken, FrameInput, Resume, SessionPlan, prompted, run_session
from service.sinks import MemorySink

pytestmark = pytest.mark.timeout(120)
SIZE = (96, 160)
OPTIONS = {"max_objects": 4, "mem_every": 4}


@pytest.fixture()
def backend(engine):
    from service.backends.local import LocalBackend

    backend = LocalBackend(engine)
    yield backend
    backend.shutdown()


async def _frames(frames, indices):
    for i in indices:
        yield Frame(i, i / 10, frames[i]), resize_frame(frames[i], SIZE)


def _prompts(labels):
    first = np.where(labels[0] == 1, 1, 0).astype(np.uint8)
    later = np.where(labels[10] == 2, 2, 0).astype(np.uint8)
    return {0: first, 10: later}


def _run(backend, clip, *, indices=range(30), stride=1, **kwargs):
    frames, labels = clip
    plan = SessionPlan("run", SIZE, SIZE, OPTIONS, stride)
    sink = MemorySink()

    async def go():
        source = prompted(_frames(frames, indices), _prompts(labels), SIZE)
        return await run_session(backend, plan, source, sink, **kwargs)

    return asyncio.run(go()), sink


def test_resume_from_a_persisted_record_matches_an_unbroken_run(backend, clip, tmp_path):
    reference, full = _run(backend, clip, records=MemoryRecordStore())
    assert reference.frames_written == 30 and reference.object_ids == [1, 2]
    store = DirectoryRecordStore(tmp_path / "record")
    token = CancelToken()
    seen = []

    def progress(report):
        seen.append(report.frame_index)
        if report.frame_index >= 17:
            token.cancel("stopped by the test")

    with pytest.raises(IsvosError, match="stopped by the test") as error:
        _run(backend, clip, records=store, progress=progress, cancel=token)
    assert error.value.code == "cancelled"
    assert backend.manager.sessions == {}  # the cancelled run closed its session
    record = asyncio.run(store.load())
    header = record.header
    last_stored = header.last_memorised_index
    assert header.object_ids == [1, 2] and last_stored >= 10
    # A record is saved only once the frames before it are written: it never runs ahead.
    assert header.next_frame_index <= max(seen) + 1
    assert sorted(int(p.stem[5:]) for p in (tmp_path / "record").glob("slot-*.bin")) == [
        s.frame_index for s in header.slots
    ]
    result, resumed = _run(backend, clip, resume=Resume(record, epoch=1))
    assert result.first_index == header.next_frame_index == last_stored + 1
    assert result.steps == result.frames_written == 30 - header.next_frame_index
    assert set(resumed.labels) == set(range(header.next_frame_index, 30))
    for index, labels in resumed.labels.items():
        np.testing.assert_array_equal(labels, full.labels[index], err_msg=f"frame {index}")


def test_each_memorised_slot_is_written_once(backend, clip):
    store = MemoryRecordStore()
    _, sink = _run(backend, clip, records=store)
    record = asyncio.run(store.load())
    slots = [s.frame_index for s in record.header.slots]
    assert slots[0] == 0 and 10 in slots  # the first frame and the prompt frame are pinned
    assert store.writes == len({0, 4, 8, 10, 14, 18, 22, 26})  # memorised frames, once each
    assert set(store.slots) == set(slots)  # evicted payloads are deleted


def test_progress_video_indices_and_stride(backend, clip):
    reports = []
    result, sink = _run(backend, clip, indices=range(0, 30, 2), stride=2,
                        progress=reports.append, total=15)  # fmt: skip
    assert result.frames_written == 15 and sorted(sink.labels) == list(range(0, 30, 2))
    assert [r.frame_index for r in reports] == list(range(0, 30, 2))
    assert [r.frames_written for r in reports] == list(range(1, 16))
    assert reports[-1].frames_total == 15 and reports[-1].steps == 15


def test_frames_before_the_first_mask_are_empty_and_objects_can_be_removed(backend, clip):
    frames, labels = clip

    async def inputs():
        async for item in prompted(_frames(frames, range(3, 20)), {5: labels[5]}, SIZE):
            if item.frame.index == 12:
                item = FrameInput(item.frame, item.model_input, item.masks, remove=(2,))
            yield item

    async def go():
        sink = MemorySink()
        store = MemoryRecordStore()
        plan = SessionPlan("rm", SIZE, SIZE, OPTIONS)
        result = await run_session(backend, plan, inputs(), sink, records=store)
        return result, sink, store

    result, sink, store = asyncio.run(go())
    assert result.first_index == 3 and result.steps == 15
    assert all(not sink.labels[i].any() for i in (3, 4))
    assert {1, 2} <= set(np.unique(sink.labels[11]))
    assert all(2 not in np.unique(sink.labels[i]) for i in range(12, 20))
    header = asyncio.run(store.load()).header
    assert header.removed_objects == [2] and header.object_ids == [1]


def test_a_failing_sink_stops_the_run_and_closes_the_session(backend, clip):
    frames, labels = clip

    class Broken(MemorySink):
        def write(self, frame, labels):
            if frame.index == 6:
                raise OSError("disk full")
            super().write(frame, labels)

    async def go():
        plan = SessionPlan("broken", SIZE, SIZE, OPTIONS)
        source = prompted(_frames(frames, range(30)), _prompts(labels), SIZE)
        await run_session(backend, plan, source, Broken())

    with pytest.raises(OSError, match="disk full"):
        asyncio.run(go())
    assert backend.manager.sessions == {}
