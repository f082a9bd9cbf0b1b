"""J&F against step time for processing sizes and memory options (the preset table).

    python benchmarks/presets.py --gt ../shared/data/davis16/train \
        --sequences car-turn horsejump-low mallard-water          # the shipped checkpoint
    python benchmarks/presets.py --gt ../shared/data/davis16/train --cv runs/cv/v1 \
        --pack runs/davis16_train_240.pack                        # each fold's model, its fold

Every grid point segments the sequences from full-resolution frames (masks scored at the
original size, DAVIS protocol) and then, side by side in the same process, times the
engine step at that point's processing size (240x432-style frames of a 16:9 video, one
object, median of ``--steps``). Prints a table and one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

# name: (short side, memory frames, memorise every, top-k[, first-frame adaptation steps])
GRID = {
    "240": (240, 16, 5, 20),
    "240 adapt 10": (240, 16, 5, 20, 10),
    "240 every 10, 8 frames": (240, 8, 10, 20),
    "240 every 3": (240, 16, 3, 20),
    "240 32 frames": (240, 32, 5, 20),
    "240 top-k 40": (240, 16, 5, 40),
    "360": (360, 16, 5, 20),
    "360 every 3, 32 frames": (360, 32, 3, 20),
    "480": (480, 16, 5, 20),
}


def _memory(point) -> dict:
    return {"max_memory_frames": point[1], "mem_every": point[2], "top_k": point[3]}


def _pairs(args) -> list[tuple[str, list[str]]]:
    """(checkpoint, sequences) to score: one pair, or each cross-validation fold's."""
    if not args.cv:
        from service.checkpoints import default_checkpoint

        return [(args.checkpoint or str(default_checkpoint(args.config)), args.sequences)]
    from isvos.train.data import PackedDataset
    from isvos.train.folds import fold_sequences

    names = PackedDataset(args.pack).sequences
    pairs = []
    for run in sorted(Path(args.cv).glob("fold*")):
        fold = int(run.name.removeprefix("fold"))
        weights = run / ("best.pt" if (run / "best.pt").exists() else "final.pt")
        pairs.append((str(weights), fold_sequences(names, args.folds, fold)))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gt", required=True, help="full-resolution frames and masks")
    parser.add_argument("--sequences", nargs="*")
    parser.add_argument("--config", default="lite")
    parser.add_argument("--checkpoint")
    parser.add_argument("--cv", help="a recipe's cross-validation folder (fold0, fold1, ...)")
    parser.add_argument("--pack", help="with --cv: the pack whose folds they are")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--points", nargs="*", help="a subset of the grid")
    parser.add_argument("--steps", type=int, default=29)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-timing", action="store_true", help="J&F only")
    args = parser.parse_args()

    import torch
    from model_step import time_steps

    from isvos.adapt import AdaptOptions, adapt_to_first_frame
    from isvos.config import MemoryOptions
    from isvos.engine import EagerRunner, Engine
    from isvos.eval_data import read_frames, read_gt_masks
    from isvos.metrics import evaluate_dataset, evaluate_sequence
    from isvos.model import build
    from isvos.processing import processing_size, resize_frame, resize_labels
    from service.evaluation import segment_sequence

    torch.set_num_threads(args.threads)
    points = {name: GRID[name] for name in (args.points or GRID)}
    per_sequence: dict[str, dict] = {name: {} for name in points}
    started = time.perf_counter()
    adapt_seconds: dict[str, list[float]] = {name: [] for name in points}
    pairs = _pairs(args)
    for weights, sequences in pairs:
        model = build(args.config, weights)
        engine = Engine(EagerRunner(model))
        for seq in sequences:
            gt = read_gt_masks(args.gt, seq)
            frames = list(read_frames(args.gt, seq))
            for name, point in points.items():
                used = engine
                if len(point) > 4:
                    began = time.perf_counter()
                    size = processing_size(*gt[0].shape, point[0])
                    adapted = adapt_to_first_frame(model, resize_frame(frames[0], size),
                                                   resize_labels(gt[0], size),
                                                   AdaptOptions(steps=point[4]))  # fmt: skip
                    used = Engine(EagerRunner(adapted))
                    adapt_seconds[name].append(time.perf_counter() - began)
                predictions = segment_sequence(used, frames, gt[0], point[0], _memory(point))
                per_sequence[name][seq] = evaluate_sequence(predictions, gt)
        print(f"scored {weights} on {len(sequences)} sequences "
              f"({time.perf_counter() - started:.0f} s)", flush=True)  # fmt: skip

    engine = Engine(EagerRunner(build(args.config)))
    rows = {}
    for name, point in points.items():
        summary = evaluate_dataset(per_sequence[name])
        size = (point[0], int(round(point[0] * 16 / 9 / 8)) * 8)
        timing = {"median_s": float("nan")}
        if not args.skip_timing:
            timing = time_steps(engine, size, 1, args.steps, "cpu",
                                MemoryOptions(**_memory(point)))  # fmt: skip
        rows[name] = {
            "J&F": round(100 * summary["J&F"], 1), "J": round(100 * summary["J"], 1),
            "F": round(100 * summary["F"], 1), "step_ms": round(1000 * timing["median_s"], 1),
            "size": f"{size[0]}x{size[1]}", "memory": _memory(point),
        }  # fmt: skip
        if adapt_seconds[name]:
            rows[name]["adapt_s_per_video"] = round(statistics.median(adapt_seconds[name]), 1)
        print(f"{name:<24} J&F {rows[name]['J&F']:5.1f}  step {rows[name]['step_ms']:6.1f} ms "
              f"({rows[name]['size']})", flush=True)  # fmt: skip
    base = rows[next(iter(rows))]["step_ms"]
    for row in rows.values():
        row["step_vs_first"] = round(row["step_ms"] / base, 2)
    print(json.dumps({"config": args.config, "pairs": [p[0] for p in pairs],
                      "sequences": sum(len(p[1]) for p in pairs), "rows": rows,
                      "threads": args.threads, "median_of": args.steps,
                      "seconds": round(time.perf_counter() - started, 1),
                      "statistics": "median"}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
