"""Fuzz the HTTP API with schemathesis against the gateway's own OpenAPI document.

Starts ``isvos serve`` (tiny checkpoint, a private Redis) with API keys off and on, makes a
real job and a finished upload so that the fuzzer reaches past "not found", then runs every
phase (examples, coverage, fuzzing, stateful through the document's links) with every check
but ``positive_data_acceptance`` (a schema-valid body is not a valid video, mask or frame
index; the API refuses those with a 4xx by design). Prints the test cases generated, the
failures by check, and whether the server still serves afterwards.

    python benchmarks/fuzz_http.py --max-examples 200            # about 5 minutes
    python benchmarks/fuzz_http.py --max-examples 20 --auth on
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from serve_child import start_serve  # noqa: E402

TOKEN = "fuzz-token"
EXCLUDED_CHECKS = ("positive_data_acceptance",)
# How the API refuses a request that breaks its schema: the tus routes answer 412 for a
# missing or wrong Tus-Resumable (409 when the offset is checked first), 413 and 415 for
# size and media type.
REFUSALS = [400, 401, 403, 404, 405, 409, 412, 413, 415, 422, 429]


def schemathesis_bin() -> str:
    return str(Path(sys.executable).with_name("schemathesis"))


def prepare(url: str, token: str | None) -> dict[str, str]:
    """A succeeded job and a finished upload of the example clip; their ids."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    video = REPO / "examples" / "shapes.mp4"
    masks = REPO / "examples" / "shapes_first_frame.png"
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        files = [("video", ("v.mp4", video.read_bytes())), ("masks", ("m.png", masks.read_bytes()))]
        job = client.post("/v1/jobs", files=files, data={"options": '{"size": 64}'}).json()
        created = client.post("/v1/uploads", headers={
            "Tus-Resumable": "1.0.0", "Upload-Length": str(video.stat().st_size)})  # fmt: skip
        upload = created.headers["location"].rstrip("/").split("/")[-1]
        client.patch(f"/v1/uploads/{upload}", content=video.read_bytes(), headers={
            "Tus-Resumable": "1.0.0", "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream"})  # fmt: skip
        deadline = time.monotonic() + 120
        while client.get(f"/v1/jobs/{job['id']}").json()["status"] not in ("succeeded", "failed"):
            if time.monotonic() > deadline:
                raise TimeoutError("the prepared job did not finish")
            time.sleep(0.2)
    return {"job_id": job["id"], "upload_id": upload, "uuid": upload}


def run_schemathesis(url: str, token: str | None, parameters: dict[str, str], *,
                     max_examples: int, seed: int, folder: Path,
                     max_time: int | None = None) -> dict:  # fmt: skip
    """One schemathesis run; its figures and its output."""
    config = folder / "schemathesis.toml"
    config.write_text(
        "[parameters]\n"
        + "".join(f'{k} = "{v}"\n' for k, v in parameters.items())
        + f"\n[checks.negative_data_rejection]\nexpected-statuses = {REFUSALS}\n"
        + f"\n[checks.missing_required_header]\nexpected-statuses = {REFUSALS}\n"
    )
    command = [schemathesis_bin(), "--config-file", str(config), "run", f"{url}/openapi.json",
               "--checks", "all", "--exclude-checks", ",".join(EXCLUDED_CHECKS),
               "--max-examples", str(max_examples), "--seed", str(seed), "-w", "1",
               "--request-timeout", "30"]  # fmt: skip
    if max_time:
        command += ["--max-time", str(max_time)]
    if token:
        command += ["-H", f"Authorization: Bearer {token}"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=folder,
                          env={**os.environ, "NO_COLOR": "1"})  # fmt: skip
    out = done.stdout + done.stderr
    generated = re.search(r"(\d+) generated", out)
    failures = re.findall(r"❌ (ST\d+ [^:\n]+): (\d+)", out)
    return {
        "exit_code": done.returncode,
        "generated": int(generated.group(1)) if generated else 0,
        "failures": {name: int(count) for name, count in failures},
        "server_errors": out.count("Server error"),
        "output": out,
    }


def serve(folder: Path, auth: bool) -> tuple[subprocess.Popen, str]:
    settings = {
        "ISVOS_STORAGE__DATA_DIR": str(folder / "data"),
        "ISVOS_BACKEND__CONFIG": "tiny",
        "ISVOS_BACKEND__CHECKPOINT": str(REPO / "tests" / "assets" / "tiny_synthetic.pt"),
        "ISVOS_BACKEND__THREADS": "1",
        "ISVOS_JOBS__PROPOSALS_TIMEOUT_S": "5",
        "ISVOS_LIMITS__BODY_IDLE_TIMEOUT_S": "5",
    }
    if auth:
        digest = hashlib.sha256(TOKEN.encode()).hexdigest()
        settings["ISVOS_AUTH__KEYS"] = json.dumps({"fuzzer": digest})
    return start_serve(folder, settings, timeout_s=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-examples", type=int, default=100)
    parser.add_argument("--max-time", type=int, default=None, help="seconds per run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--auth", choices=["off", "on", "both"], default="both")
    args = parser.parse_args()
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.auth]
    failed = False
    for auth in modes:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            process, url = serve(folder, auth)
            try:
                token = TOKEN if auth else None
                started = time.perf_counter()
                result = run_schemathesis(url, token, prepare(url, token),
                                          max_examples=args.max_examples, seed=args.seed,
                                          folder=folder, max_time=args.max_time)  # fmt: skip
                seconds = time.perf_counter() - started
                alive = httpx.get(f"{url}/healthz", timeout=5).status_code == 200
            finally:
                process.terminate()
                process.wait(30)
        print(f"API keys {'on' if auth else 'off'}: {result['generated']} test cases in "
              f"{seconds:.0f} s, failures {result['failures'] or 'none'}, "
              f"server errors {result['server_errors']}, serving afterwards: {alive}")  # fmt: skip
        if result["exit_code"] != 0 or not alive:
            failed = True
            print(result["output"][-6000:])
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
