"""Click-to-select quality: the IoU of the proposal a click selects against the clicked
object's ground truth.

For each frame (frames 0 and the middle one of every DAVIS 2016 sequence, one object each;
and the example clip's frame 0, two objects) the click is the object's deepest pixel (the
maximum of its distance transform), the proposals are ``isvos.proposals.make_proposals``
with that point, exactly what ``POST /v1/proposals`` answers. Prints the IoU per frame and
the mean, median and share >= 0.8 per split; a frame whose click selects nothing counts 0.

    python benchmarks/proposals.py                     # lite, shipped checkpoint, 240
    python benchmarks/proposals.py --splits val --size 360
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import av
import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from isvos.processing import processing_size, resize_frame  # noqa: E402
from isvos.proposals import make_proposals  # noqa: E402
from service.checkpoints import resolve_checkpoint  # noqa: E402
from service.media.masks import read_indexed_png  # noqa: E402

DAVIS = REPO.parent / "shared" / "data" / "davis16"


def frames_of(video: Path, wanted: set[int]) -> dict[int, np.ndarray]:
    out = {}
    with av.open(str(video)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                out[i] = frame.to_ndarray(format="rgb24")
            if i >= max(wanted):
                break
    return out


def deepest(mask: np.ndarray) -> tuple[int, int]:
    depth = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    y, x = np.unravel_index(depth.argmax(), depth.shape)
    return int(x), int(y)


def click_iou(engine, image: np.ndarray, truth: np.ndarray, short_side: int) -> float:
    size = truth.shape
    psize = processing_size(size[0], size[1], short_side)
    objectness, probabilities = engine.propose(resize_frame(image, psize))
    found, hit = make_proposals(objectness, probabilities, psize, size, point=deepest(truth))
    if hit is None:
        return 0.0
    mask = found[hit].mask
    return float((mask & truth).sum() / (mask | truth).sum())


def cases(split: str):
    """(name, image, ground-truth mask) of a split."""
    if split == "example":
        image = frames_of(REPO / "examples" / "shapes.mp4", {0})[0]
        labels = read_indexed_png(REPO / "examples" / "shapes_gt" / "00000.png")
        for obj in (1, 2):
            yield f"shapes/0/object{obj}", image, labels == obj
        return
    root = DAVIS / split
    for video in sorted((root / "videos").glob("*.mp4")):
        masks = sorted((root / "masks" / video.stem).glob("*.png"))
        wanted = {0, len(masks) // 2}
        for index, image in sorted(frames_of(video, wanted).items()):
            truth = read_indexed_png(masks[index]) > 0
            if truth.sum() >= 50:
                yield f"{video.stem}/{index}", image, truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="lite")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--size", type=int, default=240, help="processing short side")
    parser.add_argument("--splits", nargs="+", default=["train", "val", "example"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from isvos.engine import EagerRunner, Engine
    from isvos.model import build

    torch.set_num_threads(args.threads)
    engine = Engine(
        EagerRunner(build(args.config, resolve_checkpoint(args.config, args.checkpoint)))
    )
    print(f"config {args.config}, processing short side {args.size}")
    for split in args.splits:
        scores = []
        for name, image, truth in cases(split):
            score = click_iou(engine, image, truth, args.size)
            scores.append(score)
            print(f"  {split:8s} {name:28s} IoU {score:.3f}")
        if scores:
            share = sum(s >= 0.8 for s in scores) / len(scores)
            print(
                f"{split}: {len(scores)} clicks, mean IoU {statistics.mean(scores):.3f}, "
                f"median {statistics.median(scores):.3f}, >= 0.8: {share:.0%}"
            )


if __name__ == "__main__":
    main()
