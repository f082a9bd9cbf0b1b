"""Train on a lent GPU in chunks: bundle here, train there, bring the weights back.

Here (makes .carry/gpu, 41 MB, ignored by git; with the 24 MB checkout it fits the
64 MiB a device call carries):

    python scripts/gpu_train.py bundle --src ../shared/data/davis16/train --out .carry/gpu

There (one call per chunk; the run folder stays on the machine while it is held, and a
later call resumes it exactly; the weights come back as shards of <= 16 MB under $OUT):

    python3 scripts/gpu_train.py train --bundle .carry/gpu --config lite --recipe v2 \
        --steps 20000 --chunk-seconds 480 --run runs/gpu/lite --export $OUT

``--config paper-r50`` trains the paper's network from the same bundle. The optimiser state
(twice the weights) is too large to travel back: a run continued on a fresh machine starts
from the exported weights (``--init``) with a new optimiser, which is not an exact resume.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    bundle = commands.add_parser("bundle", help="pack the data and the backbone weights")
    bundle.add_argument("--src", required=True, help="dataset root (davis16 layout)")
    bundle.add_argument("--out", default=".carry/gpu")
    bundle.add_argument("--quality", type=int, default=45, help="JPEG quality of the pack")
    run = commands.add_parser("train", help="train one chunk (resumes the run folder)")
    run.add_argument("--bundle", default=".carry/gpu")
    run.add_argument("--config", default="lite")
    run.add_argument("--recipe", default="v2")
    run.add_argument("--steps", type=int, default=20000)
    run.add_argument("--batch-size", type=int, default=16)
    run.add_argument("--crop", default="240x432", help="HxW training crop")
    run.add_argument("--lr", type=float, help="default: the recipe's")
    run.add_argument("--chunk-seconds", type=float, default=480.0)
    run.add_argument("--run", default="runs/gpu/lite", help="kept outside the carried bundle")
    run.add_argument("--init", default="", help="start from these weights (a new run)")
    run.add_argument("--device", default="cuda")
    run.add_argument("--export", help="folder for the sharded weights (e.g. $OUT)")
    args = parser.parse_args()

    if args.command == "bundle":
        from isvos.train.bundle import make_bundle

        sizes = make_bundle(args.src, args.out, jpeg_quality=args.quality)
        print(json.dumps({"bundle": args.out, "bytes": sum(sizes.values()), "files": sizes}))
        return

    import torch

    from isvos.train.bundle import export_shards, run_chunk, use_bundle
    from isvos.train.recipes import recipe_options

    device = args.device if args.device != "cuda" or torch.cuda.is_available() else "cpu"
    height, width = (int(v) for v in args.crop.split("x"))
    overrides = {"lr": args.lr} if args.lr else {}
    options = recipe_options(
        args.recipe, config=args.config, data=use_bundle(args.bundle), out=args.run,
        steps=args.steps, batch_size=args.batch_size, crop_size=height, crop_width=width,
        device=device, init_checkpoint=args.init, eval_every=0, **overrides,
    )  # fmt: skip
    resuming = (Path(args.run) / "last.pt").exists()
    print(f"{'resuming' if resuming else 'starting'} {args.run}", file=sys.stderr, flush=True)
    started = time.monotonic()
    run, step = run_chunk(options, args.chunk_seconds)
    report = {"run": str(run), "resumed": resuming, "step": step, "of": args.steps,
              "device": device,
              "seconds": round(time.monotonic() - started, 1)}  # fmt: skip
    if args.export:
        manifest = export_shards(run, Path(args.export) / f"{args.config}.manifest.json")
        report["export"] = str(manifest)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
