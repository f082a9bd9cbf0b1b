"""A short schemathesis run against the gateway's own OpenAPI document (every phase, every
check but positive_data_acceptance), with API keys off and on: no 5xx, no response that
breaks the document, the server still serving. The long run is benchmarks/fuzz_http.py."""

from __future__ import annotations

import importlib.util

import pytest

from service.settings import token_digest
from tests.conftest import REPO
from tests.helpers.stack import GatewayServer, WorkerProcess, make_settings

pytestmark = pytest.mark.timeout(300)
pytest.importorskip("schemathesis")
_spec = importlib.util.spec_from_file_location("fuzz_http", REPO / "benchmarks" / "fuzz_http.py")
fuzz = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz)


@pytest.mark.parametrize("keys", [False, True], ids=["keys-off", "keys-on"])
def test_fuzzing_finds_nothing(redis_server, tmp_path, keys):
    auth = {"keys": {"fuzzer": token_digest(fuzz.TOKEN)}} if keys else {}
    settings = make_settings(
        redis_server.url, tmp_path, auth=auth,
        jobs={"proposals_timeout_s": 5.0}, limits={"body_idle_timeout_s": 3.0},
    )  # fmt: skip
    gateway = GatewayServer(settings)
    worker = WorkerProcess(settings, tmp_path).wait_started()
    try:
        token = fuzz.TOKEN if keys else None
        ids = fuzz.prepare(gateway.url, token)
        result = fuzz.run_schemathesis(gateway.url, token, ids, max_examples=4, seed=7,
                                       folder=tmp_path)  # fmt: skip
        with gateway.client(token) as http:
            alive = http.get("/healthz").status_code == 200
    finally:
        worker.stop()
        gateway.stop()
    assert result["generated"] > 100, result["output"][-3000:]
    assert result["exit_code"] == 0 and not result["failures"], result["output"][-6000:]
    assert alive
