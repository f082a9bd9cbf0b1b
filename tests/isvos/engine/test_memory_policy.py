"""The memory policy of spec §1.8 and DESIGN decision 5."""

from __future__ import annotations

import dataclasses
import gc
import os

import numpy as np
import pytest
import torch

from isvos.config import MemoryOptions
from isvos.engine import bank_bytes
from isvos.limits import REPLAY_WINDOW

pytestmark = pytest.mark.timeout(180)
SIZE = (64, 96)
# Process RSS growth allowed between frames 100 and 500 of one session.
RSS_GROWTH_BOUND = 20 * 1024 * 1024


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


def held_bytes(root: object, *, skip: tuple[object, ...] = ()) -> int:
    """Bytes of every tensor and numpy array reachable from ``root``, each buffer once.

    Walks containers, dataclasses, ``__dict__`` and ``__slots__``; ``skip`` objects (shared
    compute: the engine, the runner and its weights) are not entered."""
    seen_objects = {id(s) for s in skip}
    buffers: dict[int, int] = {}
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen_objects or obj is None or isinstance(obj, (str, bytes, int, float)):
            continue
        seen_objects.add(id(obj))
        if isinstance(obj, torch.Tensor):
            storage = obj.untyped_storage()
            buffers[storage.data_ptr()] = max(buffers.get(storage.data_ptr(), 0), storage.nbytes())
        elif isinstance(obj, np.ndarray):
            base = obj
            while isinstance(base.base, np.ndarray):
                base = base.base
            address = base.__array_interface__["data"][0]
            buffers[address] = max(buffers.get(address, 0), base.nbytes)
        elif isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
        elif isinstance(obj, (torch.nn.Module, type)) or callable(obj):
            continue
        else:
            if dataclasses.is_dataclass(obj):
                stack.extend(getattr(obj, f.name) for f in dataclasses.fields(obj))
            stack.extend(vars(obj).values() if hasattr(obj, "__dict__") else ())
            for name in getattr(type(obj), "__slots__", ()):
                stack.append(getattr(obj, name, None))
    return sum(buffers.values())


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_held_bytes_counts_shared_buffers_once():
    tensor = torch.zeros(10, 4)
    array = np.zeros((3, 5), np.uint8)
    held = {"a": tensor, "b": [tensor[2:], (array, array[1:])], "c": tensor.t()}
    assert held_bytes(held) == 10 * 4 * 4 + 15


def test_memory_held_by_a_session_is_bounded_however_long_the_video(engine, clip):
    """Everything a session holds (bank, record payloads, results cache) stops growing once
    its FIFO is full, and 400 more frames leave the process RSS flat.

    Observed (tiny, 64x96, one object): 761,856 bytes held at frame 50, 884,736 at 100 and
    at 500 (bank 49,152); RSS grew by 0 bytes from frame 100 to 500."""
    frames, mask = frames_and_mask(clip, 40)
    options = MemoryOptions(max_memory_frames=16)
    session = engine.open_session(SIZE, options)
    shared = (session.engine, session.runner)
    held, bank, rss = {}, {}, {}
    for i in range(501):
        session.step(i, frames[i % len(frames)], {1: mask == 1} if i == 0 else None)
        if i in (50, 100, 500):
            held[i] = held_bytes(session, skip=shared)
            bank[i] = session.memory_bytes()
            gc.collect()
            rss[i] = rss_bytes()
    # The bank is preallocated: the same bytes at every point, as the formula says.
    config = engine.config
    expected = bank_bytes(
        capacity=16, key_dim=config.key_dim, value_dim=config.value_dim,
        height=4, width=6, objects=1, bytes_per_element=4,
    )  # fmt: skip
    assert bank[50] == bank[100] == bank[500] == expected
    assert session.bank.used_slots() == 16
    # At frame 50 frames 0, 5, .., 50 are memorised: 11 of 16 slots, so the record's slot
    # payloads (frame + label map each) are still filling; the FIFO is full from frame 75 on.
    payload = SIZE[0] * SIZE[1] * 4  # uint8 RGB + uint8 labels
    assert held[50] == held[100] - 5 * payload, (held[50], held[100])
    assert abs(held[500] - held[100]) <= 4 * 1024, (held[100], held[500])
    # All of it: the bank, 16 slot payloads and the replay cache's results (probabilities
    # [1 + O, h, w] float32 and labels [h, w] uint8).
    cached = REPLAY_WINDOW * (2 * SIZE[0] * SIZE[1] * 4 + SIZE[0] * SIZE[1])
    assert held[500] == expected + 16 * payload + cached, held[500]
    assert rss[500] - rss[100] < RSS_GROWTH_BOUND, (rss[100], rss[500])
