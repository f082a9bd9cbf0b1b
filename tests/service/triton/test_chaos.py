"""A short chaos run (benchmarks/chaos.py) on the local stack: every kind of fault at least
once under jobs and streams, and the audit finds nothing lost, duplicated or different."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_faults_under_load_lose_nothing(tmp_path):
    run = subprocess.run(
        [sys.executable, "benchmarks/chaos.py", "--minutes", "2", "--uploads", "6",
         "--streams", "2", "--fps", "12", "--clips", "2", "--frames", "48",
         "--fault-every", "6", "--down-s", "1", "--seed", "3", "--logs", str(tmp_path / "logs")],
        cwd=REPO, capture_output=True, text=True, timeout=840,
    )  # fmt: skip
    report = json.loads(run.stdout[run.stdout.index("{\n") :])
    assert run.returncode == 0 and report["nothing_lost"], run.stdout[-6000:]
    assert set(report["faults"]) == {"worker", "triton", "gateway", "grpc", "redis"}, report
    assert all(f["injected"] == f["recovered"] >= 1 for f in report["faults"].values())
    assert report["jobs"]["succeeded"] == report["jobs"]["acknowledged"] == 6
    assert report["streams"]["frames_received"] == report["streams"]["frames_expected"] > 0
    assert report["streams"]["reconnects"] >= 1  # the gRPC server's kill was felt
