"""The page's tests: the job service on the shipped ``lite`` checkpoint (click-to-select
needs a trained instance branch) with API keys on, and headless Chromium driven by
Playwright (Debian's ``chromium``, launched by path; no browser is downloaded)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.helpers.stack import GatewayServer, WorkerProcess, make_settings

CHROMIUM = os.environ.get("ISVOS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# Chromium as the environment allows it here: no sandbox as root, no calls home.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]  # fmt: skip
TOKEN = "page-test-token"
ARTIFACTS = Path(os.environ.get("ISVOS_TEST_ARTIFACTS", REPO / "build" / "test-artifacts")) / "web"

sync_api = pytest.importorskip("playwright.sync_api")
if not Path(CHROMIUM).exists():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def page_service(redis_server, tmp_path_factory):
    data = tmp_path_factory.mktemp("page")
    settings = make_settings(
        redis_server.url, data, backend={"config": "lite", "checkpoint": "", "threads": 1},
        auth={"keys": {"alice": hashlib.sha256(TOKEN.encode()).hexdigest()}},
    )  # fmt: skip
    gateway = GatewayServer(settings)
    worker = WorkerProcess(settings, data).wait_started()
    yield gateway
    worker.stop()
    gateway.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
