"""Feed the decoders and mask readers broken versions of real inputs.

The inputs: the example clip as H.264 MP4 and as VP9 WebM, its first-frame masks as an
indexed PNG and as COCO RLE JSON, and a frame as PNG (the proposals' image reader). Each is
truncated (at several lengths), bit-flipped (random bytes) and header-corrupted (its first
bytes randomised), then read as the gateway and workers read it: a video is probed, checked
complete and decoded to the end; a mask is loaded for the video's size; an image is
decoded. Every case must be read or refused with a media error code: never another
exception, never a hang (a time limit per input kind) and never unbounded memory (an
address-space limit on the process that reads them).

    python benchmarks/fuzz_media.py --cases 200      # cases per input kind
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MEMORY_LIMIT = 2 << 30  # address space of the reading process
KINDS = ("mp4", "webm", "png_mask", "rle_mask", "image")


def mutations(data: bytes, cases: int, seed: int):
    """(name, bytes): truncations, bit flips and header corruptions of ``data``."""
    rng = random.Random(seed)
    for fraction in (0.0, 0.01, 0.1, 0.5, 0.9, 0.99):
        yield f"truncated@{fraction}", data[: int(len(data) * fraction)]
    for i in range(max(0, cases - 6)):
        mutated = bytearray(data)
        if i % 3 == 2:  # header corruption
            for j in range(min(len(mutated), 64)):
                mutated[j] = rng.randrange(256)
            yield f"header#{i}", bytes(mutated)
        else:
            for _ in range(rng.choice((1, 4, 32))):
                position = rng.randrange(len(mutated))
                mutated[position] ^= 1 << rng.randrange(8)
            yield f"flipped#{i}", bytes(mutated)


def originals(folder: Path) -> dict[str, tuple[bytes, str]]:
    """kind -> (bytes, file suffix) of the real inputs."""
    import av
    import numpy as np

    from service.media.masks import read_indexed_png
    from service.media.rle import encode_rle

    mp4 = REPO / "examples" / "shapes.mp4"
    frames = [f.to_ndarray(format="rgb24") for f in av.open(str(mp4)).decode(video=0)][:24]
    webm = folder / "clip.webm"
    with av.open(str(webm), "w") as container:
        stream = container.add_stream("libvpx-vp9", rate=24)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    labels = read_indexed_png(REPO / "examples" / "shapes_first_frame.png")
    rle = json.dumps(encode_rle(labels, [1, 2])).encode()
    import io

    from PIL import Image

    image = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frames[0])).save(image, format="PNG")
    return {
        "mp4": (mp4.read_bytes(), ".mp4"),
        "webm": (webm.read_bytes(), ".webm"),
        "png_mask": ((REPO / "examples" / "shapes_first_frame.png").read_bytes(), ".png"),
        "rle_mask": (rle, ".json"),
        "image": (image.getvalue(), ".png"),
    }


def read_case(kind: str, path: Path) -> str:
    """How the service reads ``path``: "read", or "refused:<code>"; raises on anything else."""
    from service.media.errors import MediaError
    from service.media.limits import MediaLimits
    from service.media.masks import load_mask_input
    from service.media.video import check_complete, iter_frames, probe_video
    from service.proposals import decode_image

    limits = MediaLimits()
    try:
        if kind in ("mp4", "webm"):
            probe_video(path, limits)
            check_complete(path, limits)
            for _ in iter_frames(path, limits, threads=1):
                pass
        elif kind in ("png_mask", "rle_mask"):
            load_mask_input(path, (240, 320), limits)
        else:
            decode_image(path.read_bytes(), limits)
    except MediaError as exc:
        return f"refused:{exc.code}"
    return "read"


def run_kind(kind: str, cases: int, seed: int) -> dict:
    """All cases of one kind, in this process (the parent limits its memory and time)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data, suffix = originals(folder)[kind]
        outcomes: Counter = Counter()
        crashes = []
        slowest = 0.0
        for name, mutated in mutations(data, cases, seed):
            path = folder / f"case{suffix}"
            path.write_bytes(mutated)
            started = time.perf_counter()
            try:
                outcomes[read_case(kind, path)] += 1
            except Exception as exc:  # noqa: BLE001 - what the fuzzing looks for
                crashes.append(f"{name}: {type(exc).__name__}: {exc}"[:300])
            slowest = max(slowest, time.perf_counter() - started)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"kind": kind, "cases": sum(outcomes.values()) + len(crashes),
            "outcomes": dict(outcomes), "crashes": crashes, "slowest_s": round(slowest, 2),
            "peak_rss_mb": round(peak_mb)}  # fmt: skip


def fuzz(kinds, cases: int, seed: int, timeout_s: float) -> list[dict]:
    """Each kind in a child process under the memory limit and a time limit."""
    results = []
    for kind in kinds:
        code = (f"import json, resource, sys; sys.path.insert(0, {str(REPO / 'benchmarks')!r}); "
                f"resource.setrlimit(resource.RLIMIT_AS, ({MEMORY_LIMIT}, {MEMORY_LIMIT})); "
                f"from fuzz_media import run_kind; "
                f"print(json.dumps(run_kind({kind!r}, {cases}, {seed})))")  # fmt: skip
        try:
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                  timeout=timeout_s, cwd=REPO)  # fmt: skip
        except subprocess.TimeoutExpired:
            results.append({"kind": kind, "error": f"hung: over {timeout_s:g} s"})
            continue
        if done.returncode != 0:
            results.append({"kind": kind, "error": f"exit {done.returncode}: "
                                                   f"{done.stderr.strip()[-500:]}"})  # fmt: skip
            continue
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=200, help="cases per input kind")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    args = parser.parse_args()
    failed = False
    for result in fuzz(args.kinds, args.cases, args.seed, timeout_s=30 + args.cases * 2):
        print(json.dumps(result))
        failed |= bool(result.get("error") or result.get("crashes"))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
