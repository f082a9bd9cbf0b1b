"""Admission control and the idle TTL, on a private server with a small budget and a 2 s
TTL (server-side parameters, so a server of their own)."""

from __future__ import annotations

import time

import pytest

from isvos import triton_contract as C
from isvos.config import TINY
from isvos.engine import bank_bytes
from service.backends.base import BackendError
from tests.service.triton.conftest import (
    assert_same_outputs,
    private_server,
    run_clip,
    sync_triton,
)

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

SIZE = (96, 160)
OPTIONS = {"max_objects": 2}
TTL_S = 2.0
# One session at 96x160 with up to 2 objects (spec 4.1 formula, float32 on a CPU).
ONE_SESSION = bank_bytes(capacity=16, key_dim=TINY.key_dim, value_dim=TINY.value_dim,
                         height=6, width=10, objects=2, bytes_per_element=4)  # fmt: skip


@pytest.fixture(scope="module")
def small_server(triton_repo):
    params = {C.P_MEMORY_BUDGET: int(ONE_SESSION * 1.5), C.P_SESSION_TTL: TTL_S}
    with private_server(triton_repo, parameters=params) as server:
        yield server


@pytest.fixture()
def backend(small_server):
    backend = sync_triton(small_server.url)
    yield backend
    backend.shutdown()


def test_open_over_budget_is_refused_not_queued(backend):
    first = backend.open("budget-a", SIZE, OPTIONS)
    started = time.monotonic()
    with pytest.raises(BackendError) as error:
        backend.open("budget-b", SIZE, OPTIONS)
    assert error.value.code == "resource_exhausted"
    assert "needs" in str(error.value) and str(ONE_SESSION) in str(error.value)
    assert time.monotonic() - started < 5  # an answer, not a backlog
    stats = backend.stats()
    assert stats["sessions"] == 1 and stats["refusals"].get("budget", 0) >= 1
    assert stats["reserved_bytes"] == ONE_SESSION
    backend.close(first)
    second = backend.open("budget-b", SIZE, OPTIONS)  # the budget is free again
    backend.close(second)


def test_idle_ttl_frees_memory_and_client_recovers(backend, local_backend, clip):
    frames, labels = clip[0][:16], clip[1][:16]
    handle, first = run_clip(backend, "ttl", frames, labels, steps=range(8), options=OPTIONS)
    before = backend.stats()
    assert before["sessions"] == 1 and before["memory_bank_bytes"] > 0
    time.sleep(TTL_S + 1.5)  # the model's sweeper frees the idle session
    after = backend.stats()
    assert after["sessions"] == 0 and after["memory_bank_bytes"] == 0
    assert after["reserved_bytes"] == 0
    assert after["evictions"] == before["evictions"] + 1
    # The client notices (not_found), primes epoch 1 from its record, goes on.
    _, rest = run_clip(backend, "", frames, labels, steps=range(8, 16), handle=handle)
    assert handle.epoch == 1
    assert backend.counters["primes"] == 1 and backend.counters["resent"] == 1
    _, reference = run_clip(local_backend, "ttl-ref", frames, labels, options=OPTIONS)
    assert_same_outputs(first + rest, reference)
    backend.close(handle)
