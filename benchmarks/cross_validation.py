"""k-fold cross-validation of training recipes on a pack (selection that does not lie).

    python benchmarks/cross_validation.py --pack runs/davis16_train_240.pack \
        --recipes v1 v2 --folds 5 --steps 300 --out runs/cv

For each fold (``isvos.train.folds``: the pack's sequences shuffled with a fixed seed and
dealt into ``--folds`` groups) and each recipe (``isvos.train.recipes``), a short run from
the ImageNet backbone trains on the other folds and is scored by J&F on the held-out fold at
its last step (with a weight average, both the averaged and the raw weights), and by mean
IoU on the procedural robustness clips. Runs are resumable (``--resume`` semantics: an
interrupted call picks up where it stopped; finished runs are read back, not retrained).
Recipes share a fold's seed, so per-fold differences are paired. Prints a table and writes
``OUT/summary.json``.
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


def _finished(run: Path, steps: int) -> dict | None:
    """The last evaluated record of a finished run, or None."""
    log = run / "log.jsonl"
    if not log.exists():
        return None
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    done = [r for r in records if r["step"] == steps and "val_J&F" in r]
    return done[-1] if done else None


def _robustness(run: Path, config: str, seeds: int) -> float:
    """Mean IoU of the run's final weights over the procedural robustness cases."""
    from robustness import score_cases

    from isvos.engine import EagerRunner, Engine
    from isvos.model import build
    from service.evaluation import segment_sequence

    weights = run / ("best.pt" if (run / "best.pt").exists() else "final.pt")
    engine = Engine(EagerRunner(build(config, str(weights))))
    rows = score_cases({"model": lambda f, first: segment_sequence(engine, f, first, 240)},
                       seeds=seeds)  # fmt: skip
    return round(sum(r["model"] for r in rows.values()) / len(rows), 3)


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1f} ± {std:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pack", required=True)
    parser.add_argument("--recipes", nargs="+", default=["v1", "v2"])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--only-folds", type=int, nargs="*", help="run just these folds")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup-steps", type=int, default=50)
    parser.add_argument("--config", default="lite")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--robustness-seeds", type=int, default=1, help="0: skip robustness")
    parser.add_argument("--out", default="runs/cv")
    args = parser.parse_args()

    import torch

    from isvos.train.data import PackedDataset
    from isvos.train.folds import fold_sequences
    from isvos.train.loop import train
    from isvos.train.recipes import recipe_options
    from isvos.train.validate import validate_on_pack

    torch.set_num_threads(args.threads)
    names = PackedDataset(args.pack).sequences
    out = Path(args.out)
    rows = []
    for fold in args.only_folds if args.only_folds is not None else range(args.folds):
        held_out = fold_sequences(names, args.folds, fold)
        row = {"fold": fold, "sequences": held_out}
        for recipe in args.recipes:
            run = out / recipe / f"fold{fold}"
            started = time.perf_counter()
            record = _finished(run, args.steps)
            if record is None:
                options = recipe_options(
                    recipe, config=args.config, data=args.pack, out=str(run),
                    steps=args.steps, warmup_steps=args.warmup_steps, val_sequences=held_out,
                    eval_every=args.steps, threads=args.threads, seed=fold,
                )  # fmt: skip
                train(options, resume=True, evaluate=validate_on_pack)
                record = _finished(run, args.steps)
            result = {"J&F": round(100 * record["val_J&F"], 1),
                      "train_s": round(record["elapsed_s"], 1)}  # fmt: skip
            if "val_raw_J&F" in record:
                result["raw_J&F"] = round(100 * record["val_raw_J&F"], 1)
            robust_file = run / "robustness.json"
            if args.robustness_seeds and not robust_file.exists():
                robust_file.write_text(json.dumps(
                    _robustness(run, args.config, args.robustness_seeds)))  # fmt: skip
            if robust_file.exists():
                result["robustness"] = json.loads(robust_file.read_text())
            row[recipe] = result
            print(json.dumps({"fold": fold, "recipe": recipe, **result,
                              "wall_s": round(time.perf_counter() - started, 1)}),
                  flush=True)  # fmt: skip
        rows.append(row)

    print(f"\n{'fold':>4}  " + "  ".join(f"{r:>22}" for r in args.recipes))
    for row in rows:
        cells = []
        for recipe in args.recipes:
            r = row[recipe]
            raw = f" (raw {r['raw_J&F']:.1f})" if "raw_J&F" in r else ""
            cells.append(f"{r['J&F']:>8.1f}{raw:>14}")
        print(f"{row['fold']:>4}  " + "  ".join(cells))
    summary = {"folds": args.folds, "steps": args.steps, "pack": args.pack, "rows": rows}
    for recipe in args.recipes:
        scores = [row[recipe]["J&F"] for row in rows]
        summary[recipe] = {"J&F": _spread(scores)}
        raws = [row[recipe]["raw_J&F"] for row in rows if "raw_J&F" in row[recipe]]
        if raws:
            summary[recipe]["raw_J&F"] = _spread(raws)
        robust = [row[recipe]["robustness"] for row in rows if "robustness" in row[recipe]]
        if robust:
            summary[recipe]["robustness"] = round(statistics.mean(robust), 3)
        print(f"{recipe}: J&F {summary[recipe]['J&F']}"
              + (f", raw {summary[recipe]['raw_J&F']}" if raws else "")
              + (f", robustness {summary[recipe]['robustness']}" if robust else ""))  # fmt: skip
    if len(args.recipes) == 2:
        a, b = args.recipes
        diffs = [row[b]["J&F"] - row[a]["J&F"] for row in rows]
        summary[f"{b}-{a}"] = {"J&F": _spread(diffs), "folds_better": sum(d > 0 for d in diffs)}
        print(f"{b} - {a}: J&F {_spread(diffs)} (better on {sum(d > 0 for d in diffs)} "
              f"of {len(diffs)} folds)")  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
