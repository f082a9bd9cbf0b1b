"""Robustness beyond DAVIS: the model against the copy and optical-flow baselines on
procedural clips with exact masks (``isvos.train.procedural``).

    python benchmarks/robustness.py                      # the shipped lite checkpoint
    python benchmarks/robustness.py --checkpoint ckpt.pt --seeds 3

For each case (solid squares on clutter, a textureless object, a logo, camera pan and zoom,
occlusion, an object leaving the frame, lighting, heavy compression, a small object,
look-alikes) and each seed: the first frame's exact masks given, mean IoU over every object
and every later frame (an object absent from both the truth and the prediction counts 1,
the DAVIS convention). Prints a table and one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def mean_iou(predictions, labels: np.ndarray) -> float:
    """Mean IoU over the first frame's objects and frames 1..T-1."""
    from isvos.metrics import db_eval_iou

    ids = [int(i) for i in np.unique(labels[0]) if i]
    scores = [db_eval_iou(np.asarray(predictions[t]) == k, labels[t] == k)
              for t in range(1, len(labels)) for k in ids]  # fmt: skip
    return float(np.mean(scores))


def score_cases(methods: dict, cases=None, seeds: int = 2, echo: bool = False) -> dict:
    """{case: {method: mean IoU over ``seeds`` clips}} for ``methods`` {name: fn(frames,
    first labels) -> predictions} on ``cases`` (all by default)."""
    from isvos.train.procedural import CASES

    rows: dict[str, dict[str, float]] = {}
    for name in cases or list(CASES):
        scores: dict[str, list[float]] = {m: [] for m in methods}
        for seed in range(seeds):
            frames, labels = CASES[name](np.random.default_rng(seed))
            for method, run in methods.items():
                scores[method].append(mean_iou(run(list(frames), labels[0]), labels))
        rows[name] = {m: round(float(np.mean(v)), 3) for m, v in scores.items()}
        if echo:
            print(f"{name:14s} " + "  ".join(f"{m} {rows[name][m]:.3f}" for m in methods),
                  flush=True)  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="lite")
    parser.add_argument("--checkpoint", help="default: the config's shipped checkpoint")
    parser.add_argument("--short-side", type=int, help="processing size (the config's default)")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--cases", nargs="*", help="a subset of the cases")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from isvos.baselines import copy_first_frame, optical_flow_propagation
    from isvos.config import get_config
    from isvos.engine import EagerRunner, Engine
    from isvos.model import build
    from service.checkpoints import default_checkpoint
    from service.evaluation import segment_sequence

    torch.set_num_threads(args.threads)
    checkpoint = args.checkpoint or default_checkpoint(args.config)
    if checkpoint is None:
        sys.exit(f"no checkpoint ships for {args.config!r}: pass --checkpoint")
    engine = Engine(EagerRunner(build(args.config, checkpoint)))
    short_side = args.short_side or get_config(args.config).default_short_side
    methods = {
        "model": lambda frames, first: segment_sequence(engine, frames, first, short_side),
        "copy": copy_first_frame,
        "flow": optical_flow_propagation,
    }
    started = time.perf_counter()
    rows = score_cases(methods, args.cases, args.seeds, echo=True)
    means = {m: round(float(np.mean([r[m] for r in rows.values()])), 3) for m in methods}
    below_flow = [n for n, r in rows.items() if r["model"] < r["flow"]]
    print(json.dumps({
        "config": args.config, "checkpoint": str(checkpoint),
        "short_side": short_side, "seeds": args.seeds, "cases": rows, "mean": means,
        "model_below_flow": below_flow, "seconds": round(time.perf_counter() - started, 1),
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
