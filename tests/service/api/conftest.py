"""A job service shared by the API tests of a module: gateway + one worker (2 jobs at once)
on the test run's Redis, with a key prefix and a data directory of its own."""

from __future__ import annotations

import pytest

from tests.helpers.stack import GatewayServer, WorkerProcess, make_settings


@pytest.fixture(scope="module")
def service(redis_server, tmp_path_factory):
    data = tmp_path_factory.mktemp("service")
    settings = make_settings(redis_server.url, data, backend={"concurrency": 2})
    gateway = GatewayServer(settings)
    worker = WorkerProcess(settings, data).wait_started()
    yield gateway
    worker.stop()
    gateway.stop()


@pytest.fixture()
def http(service):
    with service.client() as client:
        yield client
