"""Torch-free readers for VOS ground truth, frames and predictions, plus folder evaluation.

Supported ground-truth layouts (detected from the folder structure of ``root``):

* project / packed DAVIS 2016 (``/work/shared/data/davis16/<split>``):
  ``<root>/videos/<seq>.mp4`` and ``<root>/masks/<seq>/00000.png ...``;
* DAVIS: ``<root>/JPEGImages[/480p]/<seq>/*.jpg`` and ``<root>/Annotations[/480p]/<seq>/*.png``
  (the ``480p`` level is used when present);
* anything else is read like a prediction folder: ``<root>/<seq>/*.png``.

Masks are label maps (uint8, 0 = background, ``k`` = object ``k``, 255 = void in the ground
truth). Palette PNGs are read as their indices. Grayscale PNGs whose values are only 0 and 255
(original DAVIS 2016 annotations) are read as binary masks with 255 -> 1.

Scores follow spec §5.2 (see :mod:`isvos.metrics`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from isvos.metrics import evaluate_dataset, evaluate_sequence

__all__ = [
    "evaluate_folders",
    "format_table",
    "list_sequences",
    "read_frames",
    "read_gt_masks",
    "read_label_png",
    "read_pred_masks",
]

_VIDEO_EXTS = (".mp4", ".mkv", ".avi", ".mov", ".webm")
_JPEG_EXTS = (".jpg", ".jpeg")


def _layout(root: Path) -> str:
    if not root.is_dir():
        raise ValueError(f"dataset root not found or not a folder: {root}")
    if (root / "masks").is_dir():
        return "videos"
    if (root / "Annotations").is_dir() or (root / "JPEGImages").is_dir():
        return "davis"
    return "flat"


def _davis_dir(root: Path, name: str) -> Path:
    base = root / name
    return base / "480p" if (base / "480p").is_dir() else base


def _mask_dir(root: Path) -> Path:
    layout = _layout(root)
    if layout == "videos":
        return root / "masks"
    if layout == "davis":
        return _davis_dir(root, "Annotations")
    return root


def list_sequences(root: str | Path) -> list[str]:
    """Sorted names of the sequences that have a mask folder under ``root``."""
    mask_dir = _mask_dir(Path(root))
    if not mask_dir.is_dir():
        raise ValueError(f"mask folder not found: {mask_dir}")
    return sorted(p.name for p in mask_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def read_label_png(path: str | Path) -> np.ndarray:
    """Read one mask PNG as a uint8 label map (see the module docstring for the rules)."""
    with Image.open(path) as im:
        mode = im.mode
        if mode == "P":
            arr = np.array(im)
        elif mode == "1":
            arr = np.array(im).astype(np.uint8)
        elif mode in ("L", "I", "I;16"):
            arr = np.array(im)
            if arr.size and arr.max() > 255:
                raise ValueError(f"{path}: label values above 255 are not supported")
            arr = arr.astype(np.uint8)
            values = np.unique(arr)
            if values.size and np.isin(values, (0, 255)).all() and 255 in values:
                arr = (arr == 255).astype(np.uint8)
        else:
            raise ValueError(
                f"{path}: expected an indexed (palette) or grayscale PNG mask, got mode {mode!r}"
            )
    return np.ascontiguousarray(arr, dtype=np.uint8)


def _read_png_folder(folder: Path, what: str) -> list[np.ndarray]:
    if not folder.is_dir():
        raise ValueError(f"{what} folder not found: {folder}")
    files = sorted(folder.glob("*.png"))
    if not files:
        raise ValueError(f"{what} folder has no PNG files: {folder}")
    masks = [read_label_png(f) for f in files]
    shape = masks[0].shape
    for f, m in zip(files, masks, strict=True):
        if m.shape != shape:
            raise ValueError(f"{f}: mask shape {m.shape} differs from the first mask {shape}")
    return masks


def read_gt_masks(root: str | Path, seq: str) -> list[np.ndarray]:
    """Ground-truth label maps of sequence ``seq``, one per frame, in frame order."""
    return _read_png_folder(_mask_dir(Path(root)) / seq, f"ground-truth masks of {seq!r}")


def read_pred_masks(pred_root: str | Path, seq: str) -> list[np.ndarray]:
    """Predicted label maps from ``<pred_root>/<seq>/*.png`` (indexed PNGs), in frame order."""
    pred_root = Path(pred_root)
    if not pred_root.is_dir():
        raise ValueError(f"prediction root not found or not a folder: {pred_root}")
    return _read_png_folder(pred_root / seq, f"predicted masks of {seq!r}")


def _find_video(video_dir: Path, seq: str) -> Path | None:
    for ext in _VIDEO_EXTS:
        path = video_dir / f"{seq}{ext}"
        if path.is_file():
            return path
    return None


def _decode_video(path: Path) -> Iterator[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"no video stream in {path}")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            yield frame.to_ndarray(format="rgb24")


def _read_images(files: Sequence[Path]) -> Iterator[np.ndarray]:
    for f in files:
        with Image.open(f) as im:
            yield np.asarray(im.convert("RGB"), dtype=np.uint8)


def read_frames(root: str | Path, seq: str) -> Iterator[np.ndarray]:
    """Iterate the RGB uint8 frames (H, W, 3) of ``seq``.

    Videos are decoded with PyAV; DAVIS JPEG folders are read with Pillow. Missing inputs
    raise ``ValueError`` immediately (before iteration starts).
    """
    root = Path(root)
    layout = _layout(root)
    if layout == "videos":
        video = _find_video(root / "videos", seq)
        if video is None:
            raise ValueError(f"video for sequence {seq!r} not found under {root / 'videos'}")
        return _decode_video(video)
    folder = _davis_dir(root, "JPEGImages") / seq if layout == "davis" else root / seq
    if not folder.is_dir():
        raise ValueError(f"frame folder for sequence {seq!r} not found: {folder}")
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in _JPEG_EXTS)
    if not files:
        files = sorted(folder.glob("*.png"))
    if not files:
        raise ValueError(f"frame folder has no images: {folder}")
    return _read_images(files)


def evaluate_folders(
    gt_root: str | Path,
    pred_root: str | Path,
    sequences: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Evaluate the predictions in ``pred_root`` against the ground truth in ``gt_root``.

    ``sequences`` defaults to every ground-truth sequence; each must have a prediction folder
    with one PNG per ground-truth frame. Returns :func:`isvos.metrics.evaluate_dataset`'s dict
    with ``sequence_results`` (the per-sequence :func:`evaluate_sequence` outputs) added.
    """
    seqs = list(sequences) if sequences is not None else list_sequences(gt_root)
    if not seqs:
        raise ValueError(f"no sequences to evaluate under {gt_root}")
    per_seq: dict[str, dict[str, Any]] = {}
    for seq in seqs:
        gt = read_gt_masks(gt_root, seq)
        pred = read_pred_masks(pred_root, seq)
        if len(pred) != len(gt):
            raise ValueError(
                f"sequence {seq!r}: {len(pred)} predicted masks but {len(gt)} ground-truth masks"
            )
        per_seq[seq] = evaluate_sequence(pred, gt)
    result = evaluate_dataset(per_seq)
    result["sequence_results"] = per_seq
    return result


def format_table(result: dict[str, Any]) -> str:
    """Plain-text table (scores x100): sequence, J&F, J-Mean, F-Mean, then an overall row."""
    header = ("Sequence", "J&F", "J-Mean", "F-Mean")
    rows = [
        (seq, f"{100 * r['J&F']:.1f}", f"{100 * r['J']:.1f}", f"{100 * r['F']:.1f}")
        for seq, r in result["per_sequence"].items()
    ]
    overall = (
        "Overall",
        f"{100 * result['J&F']:.1f}",
        f"{100 * result['J']:.1f}",
        f"{100 * result['F']:.1f}",
    )
    width0 = max(len(header[0]), len(overall[0]), *(len(r[0]) for r in rows))
    widths = [width0] + [
        max(len(header[i]), len(overall[i]), *(len(r[i]) for r in rows)) for i in range(1, 4)
    ]

    def fmt(row: Sequence[str]) -> str:
        cells = [row[0].ljust(widths[0])] + [row[i].rjust(widths[i]) for i in range(1, 4)]
        return "  ".join(cells)

    rule = "-" * len(fmt(header))
    lines = [fmt(header), rule, *(fmt(r) for r in rows), rule, fmt(overall)]
    return "\n".join(lines)
