"""The compute the engine orchestrates: eager modules or exported TorchScript graphs.

Both runners expose the same three stages (see ``isvos.model.network``) and the identity
of the weights (``model_hash``), so a session runs unchanged on either.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
from pathlib import Path
from typing import Protocol

import torch

from isvos.config import ISVOSConfig
from isvos.model.network import ISVOS, FrameFeatures

# One TorchScript module whose three exported methods are the graphs.
GRAPHS_FILE = "isvos.pt"
GRAPH_NAMES = ("encode_frame", "read_decode", "encode_value")
# Exported since manifest version 3; an older export answers proposals with an error.
OPTIONAL_GRAPHS = ("propose",)
MANIFEST_FILE = "manifest.json"


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class ExportMismatchError(ValueError):
    """The graph file is not the one the manifest was written for (incomplete or modified)."""


class Runner(Protocol):
    config: ISVOSConfig
    model_hash: str
    device: torch.device
    dtype: torch.dtype

    def encode_frame(self, image: torch.Tensor) -> FrameFeatures: ...

    def read_decode(
        self,
        features: FrameFeatures,
        memory_key: torch.Tensor,
        memory_value: torch.Tensor,
        top_k: int,
        chunk_size: int,
    ) -> torch.Tensor: ...

    def encode_value(
        self, image: torch.Tensor, masks: torch.Tensor, foreground: torch.Tensor, f16: torch.Tensor
    ) -> torch.Tensor: ...


class _GraphRunner:
    """The three stages over ``self.graphs``: the eager network or the scripted module."""

    graphs: torch.nn.Module

    @torch.inference_mode()
    def encode_frame(self, image: torch.Tensor) -> FrameFeatures:
        # NHWC convolutions measured faster on these CPUs (and suit GPU tensor cores).
        return self.graphs.encode_frame(image.contiguous(memory_format=torch.channels_last))

    @torch.inference_mode()
    def read_decode(
        self,
        features: FrameFeatures,
        memory_key: torch.Tensor,
        memory_value: torch.Tensor,
        top_k: int,
        chunk_size: int,
    ) -> torch.Tensor:
        return self.graphs.read_decode(features, memory_key, memory_value, top_k, chunk_size)

    @torch.inference_mode()
    def encode_value(
        self, image: torch.Tensor, masks: torch.Tensor, foreground: torch.Tensor, f16: torch.Tensor
    ) -> torch.Tensor:
        return self.graphs.encode_value(image, masks, foreground, f16)

    @torch.inference_mode()
    def propose(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Instance proposals (``ISVOS.propose``); ``EngineError`` for an export without it."""
        if not hasattr(self.graphs, "propose"):
            from .errors import EngineError

            raise EngineError(
                "these exported graphs have no proposals: re-run `isvos export`",
                "failed_precondition",
            )
        return self.graphs.propose(image.contiguous(memory_format=torch.channels_last))


class EagerRunner(_GraphRunner):
    """Runs the eager ``ISVOS`` modules (inference mode)."""

    def __init__(
        self, model: ISVOS, *, dtype: torch.dtype = torch.float32, fold_bn: bool = True
    ) -> None:
        from isvos.model.build import model_hash
        from isvos.model.fuse import fold_batchnorm

        self.config = model.config
        self.model_hash = model_hash(model)
        self.device = next(model.parameters()).device
        self.dtype = dtype
        # Inference runs on a folded copy: the caller's model (maybe in training) is untouched.
        graphs = fold_batchnorm(copy.deepcopy(model)) if fold_bn else model
        self.graphs = graphs.eval().to(dtype=dtype, memory_format=torch.channels_last)


class ScriptedRunner(_GraphRunner):
    """Runs the graphs written by ``isvos export`` (a folder with a manifest).

    The graph file must hash to the manifest's ``graphs_sha256``: a file from another or an
    interrupted export, or a modified one, is refused before it is loaded."""

    def __init__(
        self,
        folder: str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        folder = Path(folder)
        manifest_path = folder / MANIFEST_FILE
        if not manifest_path.exists():
            raise FileNotFoundError(f"{manifest_path} not found: run `isvos export` first")
        self.manifest = json.loads(manifest_path.read_text())
        graphs = self._verified_graphs(folder, self.manifest)
        self.config = ISVOSConfig.from_dict(self.manifest["config"])
        self.model_hash = self.manifest["model_hash"]
        self.device = torch.device(device)
        self.dtype = dtype
        module = torch.jit.load(io.BytesIO(graphs), map_location=self.device).eval()
        self.graphs = module.to(dtype=dtype, memory_format=torch.channels_last)

    @staticmethod
    def _verified_graphs(folder: Path, manifest: dict) -> bytes:
        """The graph file's bytes, read once, so the bytes checked are the bytes loaded."""
        path = folder / GRAPHS_FILE
        redo = f"re-run `isvos export --out {folder}`"
        expected = manifest.get("graphs_sha256")
        if not expected:
            raise ExportMismatchError(
                f"{folder / MANIFEST_FILE} records no graphs_sha256 (an older export): {redo}"
            )
        if not path.exists():
            raise FileNotFoundError(f"{path} not found (incomplete export): {redo}")
        data = path.read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise ExportMismatchError(
                f"{path} does not match its manifest (sha256 {actual[:16]}, manifest "
                f"{expected[:16]}): the export was interrupted or the file modified; {redo}"
            )
        return data
