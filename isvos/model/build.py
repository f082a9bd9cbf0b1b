"""The one builder: config (+ checkpoint) -> ISVOS network, with strict versioned loading.

Checkpoint file format (``CHECKPOINT_FORMAT``, version ``CHECKPOINT_VERSION``)::

    {"format": "isvos-checkpoint", "version": 1, "config": {...ISVOSConfig fields...},
     "state_dict": {...}, "meta": {... free-form: steps, data, metrics ...}}

A checkpoint may also be stored as shards (``<name>.manifest.json`` + ``<name>.partN.pt``,
each at most 16 MB) so it can travel through size-limited channels.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch

from isvos.config import ISVOSConfig, get_config

from .network import ISVOS

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "isvos-checkpoint"
CHECKPOINT_VERSION = 1
SHARD_BYTES = 16 * 1000 * 1000


class CheckpointError(ValueError):
    """A checkpoint that does not match the requested model, or is not a checkpoint at all."""


def state_dict_hash(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, shapes, dtypes and bytes of every tensor, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def model_hash(model: ISVOS) -> str:
    """Identity of a built model: its weights (16 hex digits, used in session records)."""
    return state_dict_hash(model.state_dict())[:16]


def build(
    config: ISVOSConfig | str,
    checkpoint: str | Path | dict | None = None,
    *,
    device: str | torch.device = "cpu",
) -> ISVOS:
    """Build the network in eval mode.

    With a checkpoint, its config must equal ``config`` (architecture fields) and every
    tensor must match by name and shape: partial loads are refused. Without one, the
    weights are random (the lite backbone gets its ImageNet weights when available).
    """
    if isinstance(config, str):
        config = get_config(config)
    model = ISVOS(config)
    if checkpoint is None:
        if config.backbone.startswith("efficientnet_lite") and config.pretrained_backbone:
            model.backbone.load_imagenet_weights()
    else:
        payload = checkpoint if isinstance(checkpoint, dict) else load_checkpoint_file(checkpoint)
        load_into(model, payload)
    return model.to(device).eval()


def load_into(model: ISVOS, payload: dict) -> None:
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError("not an ISVOS checkpoint (missing format marker)")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint version {payload.get('version')} is not supported "
            f"(this build reads version {CHECKPOINT_VERSION})"
        )
    saved = ISVOSConfig.from_dict(payload["config"])
    if saved.architecture_hash() != model.config.architecture_hash():
        raise CheckpointError(
            f"checkpoint was made for config {saved.name!r} with a different architecture "
            f"than the requested {model.config.name!r}"
        )
    state = payload["state_dict"]
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint does not match the model: missing {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''}"
        )
    wrong = [k for k in expected if tuple(expected[k].shape) != tuple(state[k].shape)]
    if wrong:
        raise CheckpointError(f"checkpoint tensors have the wrong shape: {wrong[:5]}")
    model.load_state_dict(state, strict=True)


def make_checkpoint(model: ISVOS, meta: dict | None = None) -> dict:
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": dict(meta or {}),
    }


def atomic_save(payload: dict, path: str | Path) -> Path:
    """``torch.save`` to a temporary name, then rename: readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def save_checkpoint(model: ISVOS, path: str | Path, meta: dict | None = None) -> Path:
    """Write a single-file model checkpoint atomically."""
    return atomic_save(make_checkpoint(model, meta), path)


def save_sharded(payload: dict, manifest_path: str | Path, shard_bytes: int = SHARD_BYTES) -> Path:
    """Write ``payload`` as shards of at most ``shard_bytes`` each plus a JSON manifest."""
    manifest_path = Path(manifest_path)
    stem = manifest_path.name.removesuffix(".manifest.json")
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in payload["state_dict"].items():
        # torch.save adds per-tensor headers and 64-byte alignment: budget them generously.
        nbytes = tensor.numel() * tensor.element_size() + 1024
        if shards[-1] and size + nbytes > shard_bytes * 0.9:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    files = []
    for i, shard in enumerate(shards):
        file = manifest_path.with_name(f"{stem}.part{i}.pt")
        torch.save(shard, file)
        if file.stat().st_size > shard_bytes:
            raise CheckpointError(f"shard {file.name} exceeds {shard_bytes} bytes")
        files.append(file.name)
    header = {k: v for k, v in payload.items() if k != "state_dict"}
    header["shards"] = files
    manifest_path.write_text(json.dumps(header, indent=1, sort_keys=True))
    return manifest_path


def load_checkpoint_file(path: str | Path) -> dict:
    """Read a single-file checkpoint or a shard manifest (``*.manifest.json``)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.name.endswith(".json"):
        header = json.loads(path.read_text())
        state: dict[str, torch.Tensor] = {}
        for name in header.pop("shards"):
            state.update(torch.load(path.with_name(name), map_location="cpu", weights_only=True))
        header["state_dict"] = state
        return header
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for non-checkpoint files
        raise CheckpointError(f"{path} is not a readable checkpoint: {exc}") from exc
