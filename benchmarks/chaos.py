"""Faults under load: processes killed while jobs and streams run, then an audit.

    python benchmarks/chaos.py                        # 10 minutes, 50 uploads, 8 streams
    python benchmarks/chaos.py --minutes 3 --uploads 12 --streams 3 --fault-every 15

Starts the deployed topology as processes (``service.stack.LocalStack``: Redis with its
append-only file, 2 Triton servers, the HTTP gateway, the gRPC server, 2 workers; the
``tiny`` model so that the service, not the model, is loaded). First an uninterrupted
reference: each input clip once as a job (its masks) and once as a stream (must equal the
job). Then, for ``--minutes``, the load of ``benchmarks/load.py`` (``--uploads`` jobs submitted
evenly over the time with the Python client, ``--streams`` camera streams at ``--fps`` with
``TrackClient``) while every ``--fault-every`` seconds (with jitter) one fault is injected, in
shuffled rounds so that each kind comes several times:

- ``worker``: a worker SIGKILLed (its job is reclaimed after the lease);
- ``triton``: a Triton server and its python stubs SIGKILLed (sessions re-prime elsewhere);
- ``gateway``: the HTTP gateway SIGKILLed (clients retry);
- ``grpc``: the gRPC server SIGKILLed (streams reconnect and resume with their token);
- ``redis``: Redis SIGKILLed and started again on its append-only file.

Each killed process is started again after ``--down-s`` (a pod restart) on its ports; a fault
counts as recovered once the process is ready again. Afterwards the audit: every
acknowledged job succeeded with every frame's mask identical to the reference; every stream
got every frame's result exactly once, in order, identical to the reference; no job made
twice; the service still ready. Prints one JSON object; exits 1 if anything was lost.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import random
import shutil
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from load import percentile  # noqa: E402

TINY = REPO / "tests" / "assets" / "tiny_synthetic.pt"
SIZE = 96  # processing short side of jobs and streams
FAULTS = ("worker", "triton", "gateway", "grpc", "redis")


@dataclass
class Clip:
    name: str
    video: Path
    masks: Path
    frames: list[np.ndarray]
    first_labels: np.ndarray
    reference: list[str] = field(default_factory=list)  # digest of each frame's label map


def digest(labels: np.ndarray) -> str:
    labels = np.ascontiguousarray(labels, np.uint8)
    return hashlib.sha256(repr(labels.shape).encode() + labels.tobytes()).hexdigest()


def make_clips(folder: Path, count: int, frames: int) -> list[Clip]:
    """``count`` synthetic clips (moving textured objects with exact masks) as H.264 files."""
    import av

    from isvos.train.synthetic import synthetic_clip
    from service.media.masks import write_indexed_png
    from service.media.video import iter_frames

    clips = []
    for i in range(count):
        images, labels = synthetic_clip(np.random.default_rng(100 + i), num_frames=frames,
                                        height=240, width=320, num_objects=2 + i % 2,
                                        max_speed=3.0)  # fmt: skip
        video, masks = folder / f"clip{i}.mp4", folder / f"clip{i}.png"
        with av.open(str(video), "w") as container:
            stream = container.add_stream("libx264", rate=24)
            stream.height, stream.width, stream.pix_fmt = 240, 320, "yuv420p"
            stream.options = {"crf": "18", "preset": "ultrafast"}
            for image in images:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            container.mux(stream.encode())
        write_indexed_png(masks, labels[0])
        decoded = [f.image for f in iter_frames(video)]  # what the workers decode
        clips.append(Clip(f"clip{i}", video, masks, decoded, labels[0]))
    return clips


class Audit:
    """What the clients asked for, got and saw."""

    def __init__(self) -> None:
        self.acknowledged: dict[str, str] = {}  # job id -> clip name
        self.job_status: dict[str, str] = {}
        self.job_mismatches: dict[str, list[str]] = {}
        self.job_seconds: list[float] = []
        self.jobs_claimed_again = 0  # jobs a fault sent back to the queue (attempts > 1)
        self.submit_errors: list[str] = []
        self.streams_started = 0
        self.streams_completed = 0
        self.stream_errors: list[str] = []
        self.frames_expected = 0
        self.frames_received = 0
        self.frames_lost = 0
        self.frames_duplicated = 0
        self.frames_mismatched = 0
        self.frame_ms: list[float] = []
        self.http_status: dict[int, int] = {}
        self.http_retries = 0
        self.stream_reconnects = 0
        self.streams_resumed = 0
        self.faults: list[dict] = []

    def count_status(self, response) -> None:
        self.http_status[response.status_code] = self.http_status.get(response.status_code, 0) + 1


# ---------------------------------------------------------------------------- clients


def http_client(url: str, audit: Audit):
    from service.client import AsyncClient

    client = AsyncClient(url, timeout=60, retry_s=300)

    async def hook(response) -> None:
        audit.count_status(response)

    client.http.event_hooks["response"].append(hook)
    return client


async def job_masks(client, job_id: str) -> list[str]:
    """Digests of the job's masks, in frame order (from its PNG zip)."""
    data = await client.result(job_id, "png_zip")

    def read() -> list[str]:
        from PIL import Image

        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = sorted(n for n in archive.namelist() if n.endswith(".png"))
            return [digest(np.array(Image.open(io.BytesIO(archive.read(n))))) for n in names]

    return await asyncio.to_thread(read)


async def one_job(url: str, clip: Clip, audit: Audit) -> str | None:
    """Submit ``clip``, follow it to its end, audit its masks. The job's id once acknowledged."""
    from isvos.errors import IsvosError

    client = http_client(url, audit)
    started = time.perf_counter()
    try:
        try:
            job = await client.submit(clip.video, [clip.masks],
                                      {"size": SIZE, "outputs": ["png_zip"]})  # fmt: skip
        except IsvosError as exc:
            audit.submit_errors.append(f"{exc.code}: {exc.message}"[:200])
            return None
        job_id = job["id"]
        audit.acknowledged[job_id] = clip.name
        final = await client.wait(job_id)
        audit.jobs_claimed_again += int(final.get("attempts", 1) > 1)
        audit.job_seconds.append(time.perf_counter() - started)
        if final["status"] == "succeeded" and clip.reference:
            try:
                got = await job_masks(client, job_id)
            except IsvosError as exc:  # a succeeded job whose masks cannot be read: lost
                audit.job_status[job_id] = f"masks unreadable ({exc.code})"
                return job_id
            wrong = [str(i) for i, (a, b) in enumerate(zip(got, clip.reference, strict=False))
                     if a != b]  # fmt: skip
            if len(got) != len(clip.reference):
                wrong.append(f"{len(got)} masks for {len(clip.reference)} frames")
            if wrong:
                audit.job_mismatches[job_id] = wrong[:10]
        audit.job_status[job_id] = final["status"]
        return job_id
    except IsvosError as exc:  # the job's outcome could not be learnt: counted as lost
        audit.job_status.setdefault(job_id, f"unknown ({exc.code})")
        return job_id
    finally:
        audit.http_retries += client.retries
        await client.aclose()


async def one_stream(target: str, clip: Clip, fps: float, audit: Audit | None) -> list[str]:
    """Stream ``clip`` at ``fps``; digests of the results in the order they came."""
    from service.rpc.client import SendFrame, TrackClient, result_labels
    from service.rpc.gen import segmentation_pb2 as pb

    sent: dict[int, float] = {}

    async def source():
        first = time.perf_counter()
        for i, image in enumerate(clip.frames):
            if fps:
                await asyncio.sleep(max(0.0, first + i / fps - time.perf_counter()))
            sent[i] = time.perf_counter()
            yield SendFrame(i, image, clip.first_labels if i == 0 else None)

    got: list[tuple[int, str]] = []
    client = TrackClient(target, open_options=pb.Open(short_side=SIZE), reconnect_s=300)
    try:
        async for result in client.track(source()):
            if audit is not None:
                audit.frame_ms.append((time.perf_counter() - sent[result.index]) * 1e3)
            labels = await asyncio.to_thread(result_labels, result)
            got.append((result.index, digest(labels)))
    finally:
        await client.close()
        if audit is not None:  # also for a stream that failed: what it got is audited
            audit.stream_reconnects += client.reconnects
            audit.streams_resumed += int(client.reconnects > 0)
            check_stream(clip, got, audit)
    return [d for _, d in got]


def check_stream(clip: Clip, got: list[tuple[int, str]], audit: Audit) -> None:
    indices = [i for i, _ in got]
    audit.frames_expected += len(clip.frames)
    audit.frames_received += len(got)
    audit.frames_duplicated += len(indices) - len(set(indices))
    audit.frames_lost += len(set(range(len(clip.frames))) - set(indices))
    if indices != sorted(set(indices)):
        audit.stream_errors.append(f"{clip.name}: results out of order")
    audit.frames_mismatched += sum(1 for i, d in got if i < len(clip.reference)
                                   and d != clip.reference[i])  # fmt: skip


async def stream_loops(target: str, clips: list[Clip], count: int, seconds: float,
                       fps: float, audit: Audit) -> None:  # fmt: skip
    deadline = time.monotonic() + seconds

    async def loop(n: int) -> None:
        k = n
        while time.monotonic() < deadline:
            clip = clips[k % len(clips)]
            k += count
            audit.streams_started += 1
            try:
                await one_stream(target, clip, fps, audit)
                audit.streams_completed += 1
            except Exception as exc:  # noqa: BLE001 - a lost stream, counted and reported
                audit.stream_errors.append(f"{clip.name}: {type(exc).__name__}: {exc}"[:300])

    await asyncio.gather(*(loop(n) for n in range(count)))


async def uploads(url: str, clips: list[Clip], count: int, seconds: float,
                  audit: Audit) -> None:  # fmt: skip
    tasks = []
    for n in range(count):
        tasks.append(asyncio.create_task(one_job(url, clips[n % len(clips)], audit)))
        await asyncio.sleep(seconds / count)
    await asyncio.gather(*tasks)


# ---------------------------------------------------------------------------- faults


async def inject_faults(stack, seconds: float, every: float, down_s: float, audit: Audit,
                        rng: random.Random) -> None:  # fmt: skip
    """One fault every ``every`` seconds (±30 %), in shuffled rounds of all kinds."""
    deadline = time.monotonic() + seconds
    plan: list[str] = []
    while every > 0:
        pause = every * rng.uniform(0.7, 1.3)
        if time.monotonic() + pause >= deadline:
            return
        await asyncio.sleep(pause)
        if not plan:
            plan = rng.sample(FAULTS, len(FAULTS))
        kind = plan.pop()
        record = {"kind": kind, "at_s": round(time.monotonic() - (deadline - seconds), 1)}
        began = time.perf_counter()
        try:
            record["target"] = await asyncio.to_thread(fault, stack, kind, down_s, rng)
            record["recovered"] = True
        except Exception as exc:  # noqa: BLE001 - reported as not recovered
            record["recovered"] = False
            record["error"] = f"{type(exc).__name__}: {exc}"[:300]
        record["down_to_ready_s"] = round(time.perf_counter() - began, 1)
        audit.faults.append(record)
        print(json.dumps({"fault": record}), flush=True)


def fault(stack, kind: str, down_s: float, rng: random.Random) -> str:
    """Inject one fault of ``kind`` and bring the process back; the target's name."""
    if kind == "redis":
        stack.redis.kill()
        time.sleep(down_s)
        stack.redis.start_again()  # on its append-only file
        return "redis"
    proc = {
        "worker": lambda: rng.choice(busy_workers(stack) or stack.workers),
        "triton": lambda: rng.choice(stack.tritons),
        "gateway": lambda: stack.gateway,
        "grpc": lambda: stack.grpc,
    }[kind]()
    proc.kill()
    time.sleep(down_s)
    stack.restart(proc)
    return proc.name


def busy_workers(stack) -> list:
    """The workers holding a running job now (a kill then interrupts work)."""
    import redis

    from service.keys import Keys
    from service.settings import RedisSettings

    client = redis.Redis(port=stack.redis.port, decode_responses=True)
    try:
        pattern = Keys(RedisSettings().key_prefix).job("*")
        holders = set()
        for key in client.scan_iter(pattern, count=1000):
            job = client.hmget(key, "status", "worker")
            if job[0] == "running" and job[1]:
                holders.add(job[1])
    finally:
        client.close()
    return [w for w in stack.workers if w.args[-1] in holders]


# ---------------------------------------------------------------------------- the run


def model_repo(folder: Path) -> Path:
    """A copy of model_repo/ with the tiny checkpoint exported into it."""
    from service.triton_server import exported_repository

    return exported_repository(REPO / "model_repo", folder / "model_repo", "tiny", TINY)


async def references(stack, clips: list[Clip], audit: Audit) -> list[str]:
    """Each clip once as a job and once as a stream, no faults: the reference masks."""
    problems = []
    reference_audit = Audit()
    for clip in clips:
        job_id = await one_job(stack.http_url, clip, reference_audit)
        if job_id is None or reference_audit.job_status.get(job_id) != "succeeded":
            raise RuntimeError(f"the reference job of {clip.name} did not succeed")
        client = http_client(stack.http_url, reference_audit)
        clip.reference = await job_masks(client, job_id)
        await client.aclose()
        streamed = await one_stream(stack.grpc_target, clip, 0, None)
        if streamed != clip.reference:
            problems.append(f"{clip.name}: the reference stream differs from the job")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--uploads", type=int, default=50)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--fps", type=float, default=10.0, help="frames/s each stream sends")
    parser.add_argument("--clips", type=int, default=3, help="distinct input clips")
    parser.add_argument("--frames", type=int, default=96, help="frames per clip")
    parser.add_argument(
        "--fault-every",
        type=float,
        default=40.0,
        help="seconds between faults (0: none, the same load without faults)",
    )
    parser.add_argument("--down-s", type=float, default=2.0, help="seconds a process stays down")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--logs", type=Path, help="copy the services' logs here")
    args = parser.parse_args()

    import httpx

    from service.stack import LocalStack, StackOptions

    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        clips = make_clips(folder, args.clips, args.frames)
        options = StackOptions(
            data_dir=folder / "stack", tritons=2, workers=2, http_port=0, grpc_port=0,
            model_repo=model_repo(folder), config="tiny", checkpoint=str(TINY), device="cpu",
            triton_params={"torch_threads": "1"},
            env={"ISVOS_JOBS__LEASE_S": "5", "ISVOS_JOBS__RETENTION_S": "7200",
                 "ISVOS_LIMITS__MAX_QUEUED_JOBS": "1000"},
        )  # fmt: skip
        audit = Audit()
        with LocalStack(options) as stack:
            started = time.perf_counter()
            reference_problems = asyncio.run(references(stack, clips, audit))
            reference_s = time.perf_counter() - started
            seconds = args.minutes * 60

            async def run() -> None:
                await asyncio.gather(
                    uploads(stack.http_url, clips, args.uploads, seconds, audit),
                    stream_loops(
                        stack.grpc_target, clips, args.streams, seconds, args.fps, audit
                    ),  # fmt: skip
                    inject_faults(stack, seconds, args.fault_every, args.down_s, audit, rng),
                )

            started = time.perf_counter()
            asyncio.run(run())
            elapsed = time.perf_counter() - started
            ready = httpx.get(f"{stack.http_url}/readyz", timeout=10).status_code
            jobs_total = len(httpx.get(f"{stack.http_url}/v1/jobs", params={"limit": 200},
                                       timeout=30).json()["jobs"])  # fmt: skip
            if args.logs:
                shutil.copytree(stack.logs, args.logs, dirs_exist_ok=True)
            restarts = {p.name: p.restarts for p in [*stack.workers, *stack.tritons,
                                                     stack.gateway, stack.grpc]}  # fmt: skip
    report = summarise(args, audit, clips, elapsed, reference_s, reference_problems, ready,
                       jobs_total, restarts)  # fmt: skip
    print(json.dumps(report, indent=1))
    sys.exit(0 if report["nothing_lost"] else 1)


def summarise(args, audit: Audit, clips, elapsed, reference_s, reference_problems, ready,
              jobs_total, restarts) -> dict:  # fmt: skip
    succeeded = sum(1 for s in audit.job_status.values() if s == "succeeded")
    lost_jobs = [j for j in audit.acknowledged if audit.job_status.get(j) != "succeeded"]
    faults: dict[str, dict[str, int]] = {}
    for record in audit.faults:
        row = faults.setdefault(record["kind"], {"injected": 0, "recovered": 0})
        row["injected"] += 1
        row["recovered"] += int(record["recovered"])
    frames_per_job = len(clips[0].frames)
    report = {
        "minutes": round(elapsed / 60, 1), "reference_s": round(reference_s, 1),
        "clips": len(clips), "frames_per_clip": frames_per_job,
        "faults": faults, "fault_log": audit.faults, "restarts": restarts,
        "jobs": {"asked": args.uploads, "acknowledged": len(audit.acknowledged),
                 "succeeded": succeeded, "lost": lost_jobs,
                 "masks_differing": audit.job_mismatches,
                 "submit_errors": audit.submit_errors[:5],
                 "claimed_again_after_a_fault": audit.jobs_claimed_again,
                 "made_in_all": jobs_total, "made_for_references": len(clips),
                 "seconds_p50": round(percentile(audit.job_seconds, 0.5), 2),
                 "seconds_p99": round(percentile(audit.job_seconds, 0.99), 2),
                 "seconds_max": round(max(audit.job_seconds, default=float("nan")), 2)},
        "streams": {"started": audit.streams_started, "completed": audit.streams_completed,
                    "errors": audit.stream_errors[:5], "reconnects": audit.stream_reconnects,
                    "resumed": audit.streams_resumed,
                    "frames_expected": audit.frames_expected,
                    "frames_received": audit.frames_received,
                    "frames_lost": audit.frames_lost,
                    "frames_duplicated": audit.frames_duplicated,
                    "frames_mismatched": audit.frames_mismatched,
                    "frame_ms_p50": round(percentile(audit.frame_ms, 0.5), 1),
                    "frame_ms_p99": round(percentile(audit.frame_ms, 0.99), 1),
                    "frame_ms_max": round(max(audit.frame_ms, default=float("nan")), 1)},
        "http": {"status_counts": audit.http_status, "client_retries": audit.http_retries},
        "reference_problems": reference_problems, "ready_after": ready,
    }  # fmt: skip
    report["nothing_lost"] = bool(
        not lost_jobs and not audit.job_mismatches and not audit.submit_errors
        and len(audit.acknowledged) == args.uploads
        and jobs_total == len(audit.acknowledged) + len(clips)
        and not audit.stream_errors and audit.frames_lost == 0
        and audit.frames_duplicated == 0 and audit.frames_mismatched == 0
        and not reference_problems and ready == 200
        and all(r["recovered"] for r in audit.faults)
    )  # fmt: skip
    return report


if __name__ == "__main__":
    main()
