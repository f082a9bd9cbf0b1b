"""The ISVOS network (torch). Build it with :func:`isvos.model.build`."""

from .build import CheckpointError, build, model_hash, save_checkpoint
from .network import ISVOS

__all__ = ["ISVOS", "CheckpointError", "build", "model_hash", "save_checkpoint"]
