"""Export of the network's compute to TorchScript (DESIGN decision 8).

``export_model`` scripts the network; its three exported methods are the graphs
(plain tensors in and out, dynamic height and width):

- ``encode_frame(image [B, 3, H, W] float in [0, 1]) -> (key, f16, f8, f4, p32, p16, p8)``
- ``read_decode(features, memory_key [C_k, M], memory_value [O, C_v, M], top_k, chunk)
  -> logits [O, H'/4, W'/4]``
- ``encode_value(image [1, 3, H, W], masks [O, H, W], foreground [H, W], f16)
  -> values [O, C_v, H'/16, W'/16]``

(H', W' = H, W padded to a multiple of 32.) A ``manifest.json`` beside the graphs records
the config, the weights' hash, the graph file's SHA-256 (``graphs_sha256``, checked by
``ScriptedRunner``), the processing rules and the versions. Nothing about sessions is inside
the graphs: the engine orchestrates them.

Both files are written to temporary names in the folder, then renamed into place, graphs
first and the manifest last: an export that fails before the renames leaves the previous
one untouched, and one cut off between them leaves graphs that no longer match the
manifest, which the runner refuses.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import uuid
from pathlib import Path

import torch

from isvos import __version__
from isvos.engine.runner import (
    GRAPH_NAMES,
    GRAPHS_FILE,
    MANIFEST_FILE,
    OPTIONAL_GRAPHS,
    file_sha256,
)
from isvos.model.build import model_hash
from isvos.model.fuse import fold_batchnorm
from isvos.model.network import ISVOS

MANIFEST_FORMAT = "isvos-export"
# 2: ``graphs_sha256`` added (required by ScriptedRunner). 3: the ``propose`` graph.
MANIFEST_VERSION = 3


def _temporary(folder: Path, name: str) -> Path:
    """A unique name in ``folder`` (same file system, so ``os.replace`` is atomic); the file
    is created by its writer, with the usual permissions (mkstemp's would be 0600)."""
    return folder / f".{name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp"


def _sync(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())


def export_model(model: ISVOS, out_dir: str | Path, *, checkpoint: str | None = None) -> Path:
    """Script ``model`` (on CPU, fp32) into ``out_dir``; returns the manifest path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.to("cpu").float().eval()
    identity = model_hash(model)
    scripted = torch.jit.script(fold_batchnorm(copy.deepcopy(model)))
    config = model.config
    graphs_tmp = _temporary(out, GRAPHS_FILE)
    manifest_tmp = _temporary(out, MANIFEST_FILE)
    try:
        scripted.save(str(graphs_tmp))
        manifest = {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "config": config.to_dict(),
            "architecture_hash": config.architecture_hash(),
            "model_hash": identity,
            "checkpoint": checkpoint,
            "graphs": {"file": GRAPHS_FILE, "methods": [*GRAPH_NAMES, *OPTIONAL_GRAPHS]},
            "graphs_sha256": file_sha256(graphs_tmp),
            "processing": {
                "input": "RGB float32 in [0, 1], [B, 3, H, W], any H and W",
                "resize": "short side to the processing size before the graphs (isvos.processing)",
                "size_divisibility": config.size_divisibility,
                "padding": "bottom/right zeros after normalisation, inside the graphs",
                "default_short_side": config.default_short_side,
                "output_stride": 4,
            },
            "versions": {
                "isvos": __version__,
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
        }
        manifest_tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
        _sync(graphs_tmp)
        _sync(manifest_tmp)
        os.replace(graphs_tmp, out / GRAPHS_FILE)
        os.replace(manifest_tmp, out / MANIFEST_FILE)  # the manifest publishes the export
    finally:
        graphs_tmp.unlink(missing_ok=True)
        manifest_tmp.unlink(missing_ok=True)
    return out / MANIFEST_FILE
