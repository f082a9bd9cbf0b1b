"""Sessions across two Triton servers: least-loaded placement, draining, failover to the
other server with identical results, and a record from other weights refused everywhere."""

from __future__ import annotations

import pytest
import torch

from service.backends.base import BackendError
from tests.service.triton.conftest import (
    assert_same_outputs,
    private_server,
    run_clip,
    start_server,
    sync_triton,
)

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]


@pytest.fixture(scope="module")
def other_weights_repo(triton_repo, tmp_path_factory):
    """The model repository with graphs exported from perturbed tiny weights."""
    import shutil

    from isvos.model.build import atomic_save
    from service.triton_server import ensure_exported
    from tests.conftest import TINY_CHECKPOINT

    payload = torch.load(TINY_CHECKPOINT, weights_only=True)
    generator = torch.Generator().manual_seed(0)
    payload["state_dict"] = {
        k: v + 0.01 * torch.randn(v.shape, generator=generator) if v.is_floating_point() else v
        for k, v in payload["state_dict"].items()
    }
    folder = tmp_path_factory.mktemp("other")
    checkpoint = atomic_save(payload, folder / "other.pt")
    repo = folder / "model_repo"
    shutil.copytree(triton_repo, repo, ignore=shutil.ignore_patterns("isvos.pt", "manifest.json"))
    ensure_exported(repo / "isvos" / "1", "tiny", checkpoint)
    return repo


def _where(backend) -> dict[str, str]:
    return {sid: state.endpoint for sid, state in backend.backend.sessions.items()}


def test_least_loaded_placement_and_draining(triton_repo, clip):
    frames, labels = clip
    with private_server(triton_repo) as a, private_server(triton_repo) as b:
        backend = sync_triton([a.url, b.url])
        try:
            for i in range(4):
                run_clip(backend, f"s{i}", frames, labels, steps=range(2))
            placed = list(_where(backend).values())
            assert sorted(placed) == sorted([a.url, a.url, b.url, b.url]), placed
            a.drain()
            assert backend.stats(a.url)["draining"] is True
            for i in range(4, 7):
                run_clip(backend, f"s{i}", frames, labels, steps=range(2))
            assert [_where(backend)[f"s{i}"] for i in range(4, 7)] == [b.url] * 3
            # A session already on the draining server goes on there.
            on_a = [sid for sid, url in _where(backend).items() if url == a.url]
            assert len(on_a) == 2
            stats_a = backend.stats(a.url)
            # At most one open reached it before its stats said so (then it was skipped).
            assert stats_a["sessions"] == 2 and stats_a["drain_refusals"] <= 1
            a.drain(False)
            assert backend.stats(a.url)["draining"] is False
        finally:
            backend.shutdown()


def test_a_killed_server_s_sessions_move_with_identical_results(triton_repo, triton_server,
                                                                 clip):  # fmt: skip
    frames, labels = clip
    reference_backend = sync_triton(triton_server.url)
    try:
        _, reference = run_clip(reference_backend, "ref", frames, labels, add_at=9)
    finally:
        reference_backend.shutdown()
    a, b = start_server(triton_repo), start_server(triton_repo)
    placed = []
    backend = sync_triton([a.url, b.url], on_place=lambda sid, url: placed.append((sid, url)))
    try:
        handle, first = run_clip(backend, "moving", frames, labels, add_at=9, steps=range(20))
        holder = a if handle.endpoint == a.url else b
        other = b if holder is a else a
        holder.kill()
        _, rest = run_clip(backend, "moving", frames, labels, add_at=9, handle=handle,
                           steps=range(20, len(frames)))  # fmt: skip
        assert_same_outputs(first + rest, reference)
        assert handle.endpoint == other.url
        assert placed == [("moving", holder.url), ("moving", other.url)]
        counters = backend.backend.counters
        assert counters["failovers"] == 1 and counters["primes"] == 1
        assert backend.stats(other.url)["re_primes"] == 1
    finally:
        backend.shutdown()
        a.stop()
        b.stop()


def test_a_record_from_other_weights_is_refused_on_every_server(triton_repo, other_weights_repo,
                                                                clip):  # fmt: skip
    frames, labels = clip
    with private_server(triton_repo) as a, private_server(other_weights_repo) as b:
        b.drain()  # the session starts on a
        backend = sync_triton([a.url, b.url])
        try:
            handle, _ = run_clip(backend, "pinned", frames, labels, steps=range(10))
            assert handle.endpoint == a.url
            b.drain(False)
            a.kill()
            with pytest.raises(BackendError) as refused:
                run_clip(backend, "pinned", frames, labels, handle=handle, steps=range(10, 12))
            assert refused.value.code == "record_mismatch"
            assert "every Triton server" in refused.value.message
            assert backend.stats(b.url)["sessions"] == 0
        finally:
            backend.shutdown()
