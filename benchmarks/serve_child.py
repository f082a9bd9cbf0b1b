"""``isvos serve`` as a child process for the benchmarks, waited for until it is ready."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def start_serve(folder: Path, settings: dict[str, str], *args: str,
                timeout_s: float = 90) -> tuple[subprocess.Popen, str]:  # fmt: skip
    """``isvos serve --port P ARGS`` with ``settings`` (``ISVOS_*`` variables, the caller's
    own ``ISVOS_*`` dropped), logging to ``folder/serve.log``; (process, base URL)."""
    from service.redis_server import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISVOS_")}
    env.update(settings)
    log = open(folder / "serve.log", "wb")  # noqa: SIM115 - the child's log
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port), *args],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.3)
    process.kill()
    raise RuntimeError((folder / "serve.log").read_text()[-2000:])
