"""The training loop (spec §1.13): AdamW, a step-decay schedule, resumable checkpoints.

A run directory holds ``last.pt`` (model + optimiser + schedule + RNG state, written
atomically, so a run cut off at any moment resumes from its last save), ``best.pt`` (the
best model by held-out J&F, a plain model checkpoint), and ``log.jsonl``. ``last.pt`` holds
plain types only (dicts, lists, numbers, strings, tensors) and is read with
``weights_only=True``: a file carrying any other pickled object is refused.
"""

from __future__ import annotations

import json
import logging
import math
import pickle
import time
from collections.abc import Callable
from copy import deepcopy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from isvos.config import get_config
from isvos.model.build import atomic_save, build, load_into, make_checkpoint, save_checkpoint
from isvos.model.network import ISVOS

from .losses import BootstrapSchedule
from .synthetic import synthetic_clip
from .wrapper import TrainingWrapper

log = logging.getLogger(__name__)

STATE_FORMAT = "isvos-train-state"


@dataclass
class TrainOptions:
    config: str = "lite"
    data: str = "synthetic"  # "synthetic" or a pack made by `isvos train pack`
    out: str = "runs/lite"
    steps: int = 10000
    batch_size: int = 4
    num_frames: int = 3
    lr: float = 1e-4
    # Parameters initialised from pretrained weights (the backbone) train at this multiple.
    pretrained_lr_scale: float = 0.1
    weight_decay: float = 0.05
    # The learning rate drops 10x after this fraction of the steps (paper: 80K of 110K).
    lr_drop_at: float = 0.73
    warmup_steps: int = 200
    crop_size: int = 192
    max_objects: int = 3
    top_k: int = 20
    instance_weight: float = 0.5
    bootstrap_start: float = 0.2  # fractions of the steps
    bootstrap_end: float = 0.6
    device: str = "cpu"
    amp: bool = True  # mixed precision on CUDA only
    threads: int = 0  # 0 = torch default
    seed: int = 0
    save_every_s: float = 120.0
    eval_every: int = 1000
    val_sequences: list[str] = field(default_factory=list)
    val_short_side: int = 240
    grad_clip: float = 3.0
    max_seconds: float = 0.0  # stop (after saving) when this much wall time has passed
    init_checkpoint: str = ""  # start from these weights (a model checkpoint), not from scratch
    # Fraction of the steps trained on static frames with random deformations (§1.13 stage 1).
    static_fraction: float = 0.0
    # Fraction of the clips drawn from the procedural generator (isvos.train.procedural):
    # flat and solid objects, text, camera motion, occlusion, lighting, compression.
    procedural_fraction: float = 0.0
    # Crop width (0: square crops of crop_size); e.g. crop_size 240, crop_width 432 at 240p.
    crop_width: int = 0
    # Photometric extras per frame (isvos.train.augment.AugmentConfig).
    motion_blur_prob: float = 0.0
    noise_prob: float = 0.0
    gamma: float = 0.0
    # Probability that a clip gets a second, shifted and scaled instance of its own object
    # as another object (look-alike pairs: identity, not appearance, tells them apart).
    lookalike_prob: float = 0.0
    # Static stage strength: non-rigid warp amplitude (fraction of the short side), occluders.
    static_elastic: float = 0.0
    static_occluder_prob: float = 0.0
    # Exponential moving average of the weights (0: off). With it, evaluation and the saved
    # checkpoints (best.pt, final.pt) use the averaged weights; the raw ones are logged too.
    ema_decay: float = 0.0

    def __post_init__(self) -> None:
        for name in ("static_fraction", "procedural_fraction", "motion_blur_prob",
                     "noise_prob", "lookalike_prob", "static_occluder_prob"):  # fmt: skip
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0.0 <= self.gamma < 1.0:
            raise ValueError(f"gamma must be in [0, 1), got {self.gamma}")
        if self.crop_width < 0 or self.crop_size < 1:
            raise ValueError("crop_size must be positive and crop_width at least 0")

    @property
    def crop_hw(self) -> tuple[int, int]:
        return self.crop_size, self.crop_width or self.crop_size


class ClipSource(Protocol):
    def sample(self, rng: np.random.Generator, step: int) -> tuple[np.ndarray, np.ndarray, int]:
        """One clip: frames [T, H, W, 3] uint8, labels [T, H, W] uint8 ids 1..O, O."""
        ...


class SyntheticSource:
    def __init__(self, options: TrainOptions) -> None:
        self.options = options

    def sample(self, rng: np.random.Generator, step: int) -> tuple[np.ndarray, np.ndarray, int]:
        objects = int(rng.integers(1, self.options.max_objects + 1))
        height, width = self.options.crop_hw
        frames, labels = synthetic_clip(
            rng, num_frames=self.options.num_frames, height=height, width=width,
            num_objects=objects,
        )  # fmt: skip
        present = [o for o in range(1, objects + 1) if (labels[0] == o).any()]
        lookup = np.zeros(256, np.uint8)
        lookup[present] = np.arange(1, len(present) + 1)
        return frames, lookup[labels], len(present)


class MixedSource:
    """``base``'s clips, and with probability ``options.procedural_fraction`` a procedural
    training clip instead."""

    def __init__(self, base: ClipSource, options: TrainOptions) -> None:
        self.base = base
        self.options = options

    def sample(self, rng: np.random.Generator, step: int) -> tuple[np.ndarray, np.ndarray, int]:
        if rng.random() >= self.options.procedural_fraction:
            return self.base.sample(rng, step)
        from .procedural import training_clip

        while True:  # a clip whose objects are all out of view at first is drawn again
            clip = training_clip(rng, self.options.num_frames, self.options.crop_hw,
                                 self.options.max_objects)  # fmt: skip
            if clip[2] > 0:
                return clip


def make_source(options: TrainOptions) -> ClipSource:
    if options.data == "synthetic":
        source: ClipSource = SyntheticSource(options)
    else:
        from .data import PackedClipSource

        source = PackedClipSource(options)
    return MixedSource(source, options) if options.procedural_fraction > 0 else source


class WeightAverage:
    """An exponential moving average of a model's floating-point weights and buffers. The
    decay ramps up as ``(1 + n) / (10 + n)`` towards ``decay``, so short runs average too."""

    def __init__(self, model: ISVOS, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.shadow = {
            k: v.detach().clone()
            for k, v in model.state_dict().items()
            if v.dtype.is_floating_point
        }

    @torch.no_grad()
    def update(self, model: ISVOS) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for key, value in model.state_dict().items():
            if key in self.shadow:
                self.shadow[key].lerp_(value.detach(), 1.0 - decay)

    def averaged(self, model: ISVOS) -> ISVOS:
        """A copy of ``model`` holding the averaged weights (in eval mode)."""
        copy = deepcopy(model)
        copy.load_state_dict({**model.state_dict(), **self.shadow})
        for parameter in copy.parameters():
            parameter.grad = None
        return copy.eval()

    def state(self) -> dict:
        return {"updates": self.updates, "shadow": self.shadow}

    def load(self, state: dict) -> None:
        self.updates = int(state["updates"])
        for key, value in state["shadow"].items():
            self.shadow[key].copy_(value)


def _param_groups(model: ISVOS, options: TrainOptions) -> list[dict]:
    pretrained = options.config == "lite" and model.config.pretrained_backbone
    backbone = [p for n, p in model.named_parameters() if n.startswith("backbone.")]
    rest = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
    scale = options.pretrained_lr_scale if pretrained else 1.0
    return [
        {"params": backbone, "lr": options.lr * scale, "base_lr": options.lr * scale},
        {"params": rest, "lr": options.lr, "base_lr": options.lr},
    ]


def lr_factor(step: int, options: TrainOptions) -> float:
    warm = min(1.0, (step + 1) / max(options.warmup_steps, 1))
    drop = 0.1 if step >= options.lr_drop_at * options.steps else 1.0
    return warm * drop


def _freeze_batchnorm(model: ISVOS) -> None:
    """Keep BatchNorm statistics fixed (small batches); their affine weights still train."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eval()


def _batch(
    source: ClipSource, rng: np.random.Generator, step: int, options: TrainOptions
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    clips = [source.sample(rng, step) for _ in range(options.batch_size)]
    frames = torch.from_numpy(np.stack([c[0] for c in clips])).permute(0, 1, 4, 2, 3)
    labels = torch.from_numpy(np.stack([c[1] for c in clips]).astype(np.int64))
    return frames.float().div_(255.0), labels, [c[2] for c in clips]


def load_train_state(path: str | Path) -> dict:
    """Read ``last.pt`` with ``weights_only=True``; ``ValueError`` for anything else."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message suggests weights_only=False; keep only the reason after its marker.
        reason = str(exc).partition("WeightsUnpickler error:")[2].strip().split(". ")[0]
        raise ValueError(
            f"{path} holds objects other than tensors and plain Python types and is refused "
            f"(not written by this trainer?){': ' + reason if reason else ''}"
        ) from exc
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise ValueError(f"{path} is not a readable training state: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"{path} is not a training state")
    return state


def train(
    options: TrainOptions,
    *,
    resume: bool = False,
    evaluate: Callable[[ISVOS, TrainOptions], dict] | None = None,
    progress: Callable[[int, dict], None] | None = None,
) -> Path:
    """Run (or resume) training; returns the run directory."""
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    if options.threads:
        torch.set_num_threads(options.threads)
    device = torch.device(options.device)
    torch.manual_seed(options.seed)
    model = build(get_config(options.config), options.init_checkpoint or None, device=device)
    model.train()
    optimiser = torch.optim.AdamW(
        _param_groups(model, options), lr=options.lr, weight_decay=options.weight_decay
    )
    rng = np.random.default_rng(options.seed)
    step = 0
    best = -math.inf
    state_path = out / "last.pt"
    if resume and state_path.exists():
        state = load_train_state(state_path)
        load_into(model, state["checkpoint"])
        optimiser.load_state_dict(state["optimiser"])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        step = state["step"]
        best = state.get("best", -math.inf)
    # Made after the resume: a run that turns the average on starts it from its weights.
    average = WeightAverage(model, options.ema_decay) if options.ema_decay else None
    if average is not None and resume and state_path.exists() and "ema" in state:
        average.load(state["ema"])
        log.info("resumed %s at step %d", out, step)
    (out / "options.json").write_text(json.dumps(asdict(options), indent=1))
    source = make_source(options)
    wrapper = TrainingWrapper(model, top_k=options.top_k, instance_weight=options.instance_weight)
    schedule = BootstrapSchedule(
        start=int(options.bootstrap_start * options.steps),
        end=int(options.bootstrap_end * options.steps),
    )
    use_amp = options.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    started = time.monotonic()
    last_save = started

    def save() -> None:
        payload = {
            "format": STATE_FORMAT,
            "checkpoint": make_checkpoint(model, {"step": step, "options": asdict(options)}),
            "optimiser": optimiser.state_dict(),
            "numpy_rng": rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "step": step,
            "best": best,
        }
        if average is not None:
            payload["ema"] = average.state()
        atomic_save(payload, state_path)

    def shipped() -> ISVOS:  # the weights the run evaluates and saves
        return average.averaged(model) if average is not None else model

    with (out / "log.jsonl").open("a") as log_file:
        while step < options.steps:
            model.train()
            _freeze_batchnorm(model)
            for group in optimiser.param_groups:
                group["lr"] = group["base_lr"] * lr_factor(step, options)
            frames, labels, counts = _batch(source, rng, step, options)
            frames, labels = frames.to(device), labels.to(device)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                losses = wrapper(frames, labels, counts, schedule.top_p(step))
            optimiser.zero_grad(set_to_none=True)
            scaler.scale(losses.total).backward()
            scaler.unscale_(optimiser)
            torch.nn.utils.clip_grad_norm_(model.parameters(), options.grad_clip)
            scaler.step(optimiser)
            scaler.update()
            if average is not None:
                average.update(model)
            step += 1
            record = {
                "step": step,
                "loss": float(losses.total.detach()),
                "vos_ce": float(losses.vos_ce),
                "vos_dice": float(losses.vos_dice),
                "instance": float(losses.instance),
                "lr": optimiser.param_groups[1]["lr"],
                "elapsed_s": round(time.monotonic() - started, 1),
            }
            if evaluate is not None and options.eval_every and step % options.eval_every == 0:
                model.eval()
                if average is not None:
                    raw = evaluate(model, options)
                    record.update({f"val_raw_{k}": v for k, v in raw.items()})
                candidate = shipped()
                metrics = evaluate(candidate, options)
                record.update({f"val_{k}": v for k, v in metrics.items()})
                score = metrics.get("J&F", -math.inf)
                if score > best:
                    best = score
                    save_checkpoint(candidate, out / "best.pt", {"step": step, "val": metrics})
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()
            if progress is not None:
                progress(step, record)
            now = time.monotonic()
            out_of_time = options.max_seconds and now - started >= options.max_seconds
            if now - last_save >= options.save_every_s or step == options.steps or out_of_time:
                save()
                last_save = now
            if out_of_time:
                break
    if not (out / "best.pt").exists() or evaluate is None:
        save_checkpoint(shipped(), out / "final.pt", {"step": step})
    return out
