"""Training on another machine (a lent GPU): a bundle small enough to travel with the code,
runs in chunks that resume exactly, and checkpoints exported in shards.

* :func:`make_bundle` writes a pack of the training videos (240p, JPEG quality 45) and the
  Lite0 backbone's ImageNet weights (no classifier) into one folder, 41 MB for DAVIS 2016
  train, so the machine needs neither the dataset nor the weights package.
* :func:`run_chunk` trains for at most a given number of seconds and saves; called again
  with the same run folder it resumes from ``last.pt`` exactly (model, optimiser, weight
  average, random state).
* :func:`export_shards` writes the run's weights (the average when the recipe keeps one) as
  a manifest plus shards of at most 16 MB, loadable like any checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import torch

from isvos.model.backbones import LITE0_WEIGHTS_ENV, EfficientNetLite0
from isvos.model.build import SHARD_BYTES, save_sharded

from .data import pack_dataset
from .loop import TrainOptions, load_train_state, train

PACK_NAME = "train.pack"
BACKBONE_NAME = "lite0_imagenet.pt"


def make_bundle(src: str | Path, out: str | Path, *, short_side: int = 240,
                jpeg_quality: int = 45) -> dict[str, int]:  # fmt: skip
    """Write ``out/train.pack`` and ``out/lite0_imagenet.pt``; {file: bytes} of the bundle."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pack_dataset(src, out / PACK_NAME, short_side=short_side, jpeg_quality=jpeg_quality)
    backbone = EfficientNetLite0()
    if not backbone.load_imagenet_weights():
        raise RuntimeError("the Lite0 ImageNet weights are not installed here")
    torch.save(backbone.state_dict(), out / BACKBONE_NAME)
    files = sorted(p for p in out.rglob("*") if p.is_file())
    return {str(p.relative_to(out)): p.stat().st_size for p in files}


def use_bundle(bundle: str | Path) -> str:
    """Point the Lite0 backbone at the bundle's weights; the bundle's pack path."""
    bundle = Path(bundle)
    os.environ[LITE0_WEIGHTS_ENV] = str(bundle / BACKBONE_NAME)
    return str(bundle / PACK_NAME)


def run_chunk(options: TrainOptions, seconds: float) -> tuple[Path, int]:
    """Train ``options`` for at most ``seconds`` (resuming its run folder); (run, step)."""
    run = train(replace(options, max_seconds=seconds, save_every_s=min(60.0, seconds)),
                resume=True)  # fmt: skip
    return run, int(load_train_state(run / "last.pt")["step"])


def export_shards(run: str | Path, manifest: str | Path, shard_bytes: int = SHARD_BYTES) -> Path:
    """The run's current weights (averaged if the run keeps an average) as shards."""
    state = load_train_state(Path(run) / "last.pt")
    payload = dict(state["checkpoint"])
    if "ema" in state:
        payload["state_dict"] = {**payload["state_dict"], **state["ema"]["shadow"]}
        payload["meta"] = {**payload.get("meta", {}), "weights": "average"}
    Path(manifest).parent.mkdir(parents=True, exist_ok=True)
    return save_sharded(payload, manifest, shard_bytes)
