"""The memory policy of spec §1.8 and DESIGN decision 5."""

from __future__ import annotations

import pytest

from isvos.config import MemoryOptions
from isvos.engine import bank_bytes

pytestmark = pytest.mark.timeout(180)
SIZE = (64, 96)


def frames_and_mask(clip, n):
    frames, labels = clip
    import cv2

    small = [cv2.resize(frames[i % len(frames)], SIZE[::-1]) for i in range(n)]
    mask = cv2.resize(labels[0], SIZE[::-1], interpolation=cv2.INTER_NEAREST)
    return small, mask


def slot_frames(session):
    return [slot.frame_index for _, slot in session.bank.ordered_slots()]


def test_every_fifth_frame_fifo_and_pinned_first(engine, clip):
    frames, mask = frames_and_mask(clip, 60)
    options = MemoryOptions(max_memory_frames=4, mem_every=5)
    session = engine.open_session(SIZE, options)
    memorised = []
    for i, frame in enumerate(frames):
        result = session.step(i, frame, {1: mask == 1} if i == 0 else None)
        if result.memorised:
            memorised.append(i)
    assert memorised == list(range(0, 60, 5))
    # First frame pinned, then the three most recent memory frames (FIFO).
    assert slot_frames(session) == [0, 45, 50, 55]
    assert session.bank.evictions == len(memorised) - 4


def test_user_masks_force_memorisation_and_pins_are_capped(engine, clip):
    frames, mask = frames_and_mask(clip, 40)
    options = MemoryOptions(max_memory_frames=6, mem_every=5, max_pins=3)
    session = engine.open_session(SIZE, options)
    corrections = {3: 1, 8: 2, 13: 3, 18: 1}  # frame -> object (new or corrected)
    for i, frame in enumerate(frames):
        masks = {1: mask == 1} if i == 0 else None
        if i in corrections:
            masks = {corrections[i]: mask > 0}
        result = session.step(i, frame, masks)
        if i in corrections:
            assert result.memorised
        pinned = session.bank.pinned_frames()
        assert 0 in pinned and len(pinned) <= 3
        assert set(pinned) <= set(slot_frames(session)), "a pinned frame was evicted"
    # Object 1 was corrected at 18, which replaced its pin at 3; 8 was released by the cap.
    assert session.bank.anchors == {1: 18, 3: 13} or session.bank.anchors == {1: 18, 2: 8, 3: 13}
    assert session.bank.pinned_frames() <= {0, 8, 13, 18}


def test_memory_bytes_bounded_however_long_the_video(engine, clip):
    frames, mask = frames_and_mask(clip, 40)
    options = MemoryOptions(max_memory_frames=16)
    session = engine.open_session(SIZE, options)
    sizes = {}
    for i in range(501):
        session.step(i, frames[i % len(frames)], {1: mask == 1} if i == 0 else None)
        if i in (50, 500):
            sizes[i] = session.memory_bytes()
    assert sizes[50] == sizes[500]
    config = engine.config
    expected = bank_bytes(
        capacity=16, key_dim=config.key_dim, value_dim=config.value_dim,
        height=4, width=6, objects=1, bytes_per_element=4,
    )  # fmt: skip
    assert sizes[500] == expected
    assert session.bank.used_slots() == 16
