"""The session manager every host uses: admission, epoch fencing, idle TTL, locks."""

from __future__ import annotations

import threading

import pytest

from isvos.engine import SessionManager
from isvos.errors import IsvosError
from isvos.limits import SessionLimits

pytestmark = pytest.mark.timeout(120)
SIZE = (96, 160)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _code(call) -> str:
    with pytest.raises(IsvosError) as error:
        call()
    return error.value.code


def _first_step(live, clip, index=0):
    frames, labels = clip
    return live.session.step(index, frames[index], {1: labels[index] == 1})


def test_epochs_are_fenced_and_a_new_epoch_frees_the_old_at_once(engine, clip):
    manager = SessionManager(engine)
    old = manager.open("cam", 0, SIZE, {"max_objects": 2})
    _first_step(old, clip)
    one = manager.session_bytes(SIZE, {"max_objects": 2})
    assert manager.reserved_bytes() == one and manager.memory_bytes() > 0
    assert _code(lambda: manager.open("cam", 0, SIZE)) == "already_exists"
    new = manager.prime("cam", 1, old.session.record())
    # Epoch 0 is gone the moment epoch 1 exists: its bank is freed, its bytes released.
    assert old.session.closed and old.session.bank is None
    assert manager.reserved_bytes() == one and len(manager.sessions) == 1
    assert manager.stats()["superseded"] == 1
    assert _code(lambda: manager.get("cam", 0)) == "stale_epoch"
    assert _code(lambda: manager.open("cam", 0, SIZE)) == "stale_epoch"
    assert _code(lambda: manager.get("cam", 2)) == "not_found"
    assert manager.close("cam", 0) is False  # a late close of the old epoch changes nothing
    assert manager.get("cam", 1) is new
    assert manager.close("cam", 1) is True and manager.reserved_bytes() == 0
    assert _code(lambda: manager.get("cam", 1)) == "not_found"


def test_admission_refuses_instead_of_queueing(engine):
    one = SessionManager(engine).session_bytes(SIZE, {"max_objects": 2})
    limits = SessionLimits(budget_bytes=int(one * 1.5), max_sessions=3, max_objects=4,
                           max_processing_side=640, max_memory_frames=32)  # fmt: skip
    manager = SessionManager(engine, limits)
    manager.open("a", 0, SIZE, {"max_objects": 2})
    assert _code(lambda: manager.open("b", 0, SIZE, {"max_objects": 2})) == "resource_exhausted"
    assert _code(lambda: manager.open("c", 0, (96, 1000))) == "resource_exhausted"
    assert _code(lambda: manager.open("d", 0, SIZE, {"max_objects": 5})) == "resource_exhausted"
    assert _code(
        lambda: manager.open("e", 0, SIZE, {"max_memory_frames": 64, "max_objects": 2})
    ) == ("resource_exhausted")
    assert _code(lambda: manager.open("f", 0, (8, 8))) == "invalid_size"
    assert _code(lambda: manager.open("g", 0, SIZE, {"bogus": 1})) == "invalid_argument"
    assert manager.refusals == {"budget": 1, "size": 1, "objects": 1, "memory_frames": 1}
    manager.close("a")
    small = {"max_objects": 1, "max_memory_frames": 2}
    for name in "xyz":
        manager.open(name, 0, SIZE, small)
    assert _code(lambda: manager.open("w", 0, SIZE, small)) == "resource_exhausted"
    assert manager.refusals["sessions"] == 1


def test_a_bad_record_is_refused_before_anything_is_reserved(engine, clip):
    from isvos.engine import EagerRunner, Engine
    from isvos.model import build

    manager = SessionManager(engine)
    live = manager.open("src", 0, SIZE)
    _first_step(live, clip)
    record = live.session.record()
    manager.close("src")
    other = SessionManager(Engine(EagerRunner(build("tiny"))))  # other weights
    assert _code(lambda: other.prime("p", 0, record)) == "record_mismatch"
    small = SessionManager(engine, SessionLimits(max_processing_side=64))
    assert _code(lambda: small.prime("p", 0, record)) == "invalid_record"
    for m in (other, small):
        assert m.sessions == {} and m.reserved_bytes() == 0 and m.counters["primes"] == 0


def test_idle_sessions_are_swept_but_never_while_in_use(engine, clip):
    clock = FakeClock()
    manager = SessionManager(engine, SessionLimits(ttl_s=10), clock=clock)
    idle = manager.open("idle", 0, SIZE)
    busy = manager.open("busy", 0, SIZE)
    clock.now += 5
    assert manager.sweep() == []
    clock.now += 6
    with manager.use("busy", 0):
        assert manager.sweep() == [("idle", 0)]
    assert idle.session.closed and not busy.session.closed
    assert manager.counters["evictions"] == 1
    clock.now += 5  # "busy" was used 5 s ago (its use ended at the last clock reading)
    assert manager.sweep() == []
    clock.now += 11
    assert manager.sweep() == [("busy", 0)]
    assert _code(lambda: manager.get("busy", 0)) == "not_found"


def test_a_session_is_used_by_one_caller_at_a_time(engine, clip):
    manager = SessionManager(engine)
    manager.open("s", 0, SIZE)
    inside = threading.Event()
    release = threading.Event()
    order = []

    def holder():
        with manager.use("s", 0):
            inside.set()
            release.wait(10)
            order.append("first")

    thread = threading.Thread(target=holder)
    thread.start()
    inside.wait(10)
    other = manager.open("t", 0, SIZE)  # other sessions are not blocked
    assert other.session is not None
    waiter = threading.Thread(target=lambda: (manager.use("s", 0).__enter__(),
                                              order.append("second")))  # fmt: skip
    waiter.start()
    waiter.join(0.3)
    assert order == []  # still waiting for the first caller
    release.set()
    thread.join(10)
    waiter.join(10)
    assert order == ["first", "second"]
