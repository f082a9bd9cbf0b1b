"""The checkpoints shipped with the package (torch-free: paths only)."""

from __future__ import annotations

from pathlib import Path

CHECKPOINT_DIR = Path(__file__).resolve().parents[1] / "isvos" / "checkpoints"


def default_checkpoint(config: str) -> str | None:
    """The shipped checkpoint of a config, if the package has one."""
    path = CHECKPOINT_DIR / f"{config}.pt"
    return str(path) if path.exists() else None


def resolve_checkpoint(config: str, checkpoint: str | None) -> str | None:
    """``checkpoint`` when given, else the shipped one (None: random weights)."""
    return checkpoint or default_checkpoint(config)
