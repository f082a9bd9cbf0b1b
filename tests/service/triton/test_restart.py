"""A Triton server killed and restarted mid-clip: the client re-primes from its record and
finishes with the label maps of an uninterrupted run (private server: it gets killed)."""

from __future__ import annotations

import pytest

from tests.service.triton.conftest import assert_same_outputs, run_clip, start_server, sync_triton

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


def test_restart_mid_clip(triton_repo, local_backend, clip):
    frames, labels = clip[0][:30], clip[1][:30]
    server = start_server(triton_repo)
    backend = sync_triton(server.url, retry_unavailable_s=60)
    try:
        handle, first = run_clip(backend, "restart", frames, labels, add_at=10, steps=range(17))
        server.kill()
        server.stop()
        server = start_server(triton_repo, http_port=server.http_port, grpc_port=server.grpc_port)
        before = dict(backend.counters)
        _, rest = run_clip(backend, "", frames, labels, add_at=10, steps=range(17, 30),
                           handle=handle)  # fmt: skip
        sent = {k: backend.counters[k] - before.get(k, 0) for k in backend.counters}
        # One record and one re-sent frame; every other frame exactly once.
        assert sent["primes"] == 1 and sent["resent"] == 1
        assert sent["requests_prime"] == 1
        assert sent["requests_step"] == 13 + 1
        assert handle.epoch == 1
        _, reference = run_clip(local_backend, "restart-ref", frames, labels, add_at=10)
        assert_same_outputs(first + rest, reference)
        stats = backend.stats()
        assert stats["re_primes"] == 1 and stats["sessions"] == 1
        backend.close(handle)
    finally:
        backend.shutdown()
        server.stop()
