"""Export of the network's compute to TorchScript (DESIGN decision 8).

``export_model`` scripts the network; its three exported methods are the graphs
(plain tensors in and out, dynamic height and width):

- ``encode_frame(image [B, 3, H, W] float in [0, 1]) -> (key, f16, f8, f4, p32, p16, p8)``
- ``read_decode(features, memory_key [C_k, M], memory_value [O, C_v, M], top_k, chunk)
  -> logits [O, H'/4, W'/4]``
- ``encode_value(image [1, 3, H, W], masks [O, H, W], foreground [H, W], f16)
  -> values [O, C_v, H'/16, W'/16]``

(H', W' = H, W padded to a multiple of 32.) A ``manifest.json`` beside the graphs records
the config, the weights' hash, the processing rules and the versions. Nothing about
sessions is inside the graphs: the engine orchestrates them.
"""

from __future__ import annotations

import copy
import json
import platform
from pathlib import Path

import torch

from isvos import __version__
from isvos.engine.runner import GRAPH_NAMES, GRAPHS_FILE, MANIFEST_FILE
from isvos.model.build import model_hash
from isvos.model.fuse import fold_batchnorm
from isvos.model.network import ISVOS

MANIFEST_FORMAT = "isvos-export"
MANIFEST_VERSION = 1


def export_model(model: ISVOS, out_dir: str | Path, *, checkpoint: str | None = None) -> Path:
    """Script ``model`` (on CPU, fp32) into ``out_dir``; returns the manifest path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.to("cpu").float().eval()
    identity = model_hash(model)
    scripted = torch.jit.script(fold_batchnorm(copy.deepcopy(model)))
    tmp = out / (GRAPHS_FILE + ".tmp")
    scripted.save(str(tmp))
    tmp.replace(out / GRAPHS_FILE)
    config = model.config
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "config": config.to_dict(),
        "architecture_hash": config.architecture_hash(),
        "model_hash": identity,
        "checkpoint": checkpoint,
        "graphs": {"file": GRAPHS_FILE, "methods": list(GRAPH_NAMES)},
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
    path = out / MANIFEST_FILE
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return path
