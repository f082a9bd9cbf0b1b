"""Training data (spec §1.13 recipe; §1.17 "VOS crops / frames / objects per sample").

Torch-free (numpy + OpenCV). A *pack* is a folder holding every frame of a dataset decoded,
resized to a short side and re-encoded (frames JPEG, masks PNG) into one memory-mapped file:

* ``data.bin``: the encoded images back to back;
* ``offsets.npy``: int64 ``[N, 2]`` (byte offset, length); sequence ``s`` frame ``i`` is entry
  ``first + 2 * i`` (JPEG frame) and ``first + 2 * i + 1`` (PNG label map);
* ``index.json``: per sequence its frame count, size, object ids, source frame names,
  frame stride and source layout (written last: a pack without it is incomplete).

:class:`ClipSampler` draws XMem-style training clips from a pack (frames in temporal order
with gaps <= ``max_skip``, <= ``max_objects`` objects, clip-level augmentation from
:mod:`isvos.train.augment`, multi-object compositing). Static-image clips (stage 1 of §1.13)
come from :func:`static_clip`; :class:`Clip`, :func:`composite_clip` and :func:`static_clip`
live in :mod:`isvos.train.augment` and are re-exported here.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from isvos.eval_data import list_sequences, read_frames, read_label_png

from .augment import (
    AugmentConfig,
    Clip,
    augment_clip,
    composite_clip,
    renumber_labels,
    static_clip,
)

__all__ = [
    "Clip",
    "ClipSampler",
    "PackedClipSource",
    "PackedDataset",
    "clips_to_tensors",
    "composite_clip",
    "max_skip_at",
    "pack_dataset",
    "sample_frame_indices",
    "static_clip",
]

log = logging.getLogger(__name__)

PACK_FORMAT = "isvos-pack-v1"
_INDEX, _DATA, _OFFSETS = "index.json", "data.bin", "offsets.npy"
_JPEG_EXTS = (".jpg", ".jpeg")


# ----------------------------------------------------------------------------- packing


def _davis_dir(root: Path, name: str) -> Path:
    base = root / name
    return base / "480p" if (base / "480p").is_dir() else base


def _sorted_files(folder: Path, exts: tuple[str, ...]) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.suffix.lower() in exts)


def _sequence_items(
    root: Path, seq: str
) -> tuple[str, list[str], Iterator[np.ndarray], list[Path], int]:
    """(source, frame names, RGB/BGR frame iterator, mask files, stride) for one sequence.

    Frames from videos are RGB (converted by the caller); frames read with OpenCV are BGR.
    """
    if (root / "masks").is_dir():  # project davis16 layout: videos + dense masks
        masks = _sorted_files(root / "masks" / seq, (".png",))
        frames = (cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in read_frames(root, seq))
        return "davis16-video", [m.stem for m in masks], frames, masks, 1
    jpeg_dir = _davis_dir(root, "JPEGImages") / seq
    mask_dir = _davis_dir(root, "Annotations") / seq
    images = {f.stem: f for f in _sorted_files(jpeg_dir, _JPEG_EXTS)}
    if not images:
        images = {f.stem: f for f in _sorted_files(jpeg_dir, (".png",))}
    masks = {f.stem: f for f in _sorted_files(mask_dir, (".png",))}
    names = sorted(set(images) & set(masks))
    sparse = len(names) < len(images)  # YouTube-VOS: annotations every 5th frame only
    stride = 1
    if sparse and len(names) > 1 and all(n.isdigit() for n in names):
        stride = max(1, int(round(float(np.median(np.diff([int(n) for n in names]))))))
    frames = (cv2.imread(str(images[n]), cv2.IMREAD_COLOR) for n in names)
    return ("youtube-vos" if sparse else "davis"), names, frames, [masks[n] for n in names], stride


def _target_size(h: int, w: int, short_side: int | None) -> tuple[int, int]:
    if not short_side or min(h, w) <= short_side:
        return h, w
    s = short_side / min(h, w)
    return max(1, int(round(h * s))), max(1, int(round(w * s)))


def pack_dataset(
    src_root: str | Path,
    out_path: str | Path,
    short_side: int | None = 240,
    sequences: Sequence[str] | None = None,
    *,
    max_frames: int | None = None,
    jpeg_quality: int = 80,
) -> Path:
    """Decode a dataset into a pack folder at ``out_path`` (see the module docstring).

    Layouts: project davis16 (``videos/*.mp4`` + ``masks/``), DAVIS (``JPEGImages[/480p]`` +
    ``Annotations[/480p]``) and YouTube-VOS (same folders, sparse annotations: only the
    annotated frames are kept). Frames are resized with INTER_AREA, masks with nearest.
    ``jpeg_quality`` 80 keeps the 30 davis16 train sequences at 240p near 50 MB (q90: 77 MB;
    PSNR 34 vs 37 dB). ``max_frames`` keeps only the first frames of each sequence (tests).
    """
    src, out = Path(src_root), Path(out_path)
    jpeg_params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality), cv2.IMWRITE_JPEG_OPTIMIZE, 1]
    names = list(sequences) if sequences is not None else list_sequences(src)
    out.mkdir(parents=True, exist_ok=True)
    (out / _INDEX).unlink(missing_ok=True)
    start = time.perf_counter()
    entries: list[tuple[int, int]] = []
    infos: dict[str, dict[str, Any]] = {}
    offset = 0
    with open(out / _DATA, "wb") as fh:

        def put(buf: np.ndarray) -> None:
            nonlocal offset
            data = buf.tobytes()
            fh.write(data)
            entries.append((offset, len(data)))
            offset += len(data)

        for seq in names:
            source, frame_names, frames, mask_files, stride = _sequence_items(src, seq)
            limit = len(mask_files) if max_frames is None else min(max_frames, len(mask_files))
            first, ids, size = len(entries), np.zeros(256, bool), None
            count = 0
            for frame, mask_file in zip(frames, mask_files[:limit], strict=False):
                if frame is None:
                    raise ValueError(f"{seq}: cannot read frame {count}")
                h, w = _target_size(*frame.shape[:2], short_side)
                if (h, w) != frame.shape[:2]:
                    frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
                mask = read_label_png(mask_file)
                if mask.shape != (h, w):
                    mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
                ids[np.unique(mask)] = True
                ok1, jpg = cv2.imencode(".jpg", frame, jpeg_params)
                ok2, png = cv2.imencode(".png", mask, [cv2.IMWRITE_PNG_COMPRESSION, 3])
                if not (ok1 and ok2):
                    raise RuntimeError(f"{seq}: encoding frame {count} failed")
                put(jpg)
                put(png)
                size = size or (h, w)
                count += 1
            if hasattr(frames, "close"):
                frames.close()
            if count == 0:
                raise ValueError(f"{seq}: no frames with masks under {src}")
            if count < limit:
                log.warning("%s: %d masks but only %d frames; keeping %d", seq, limit, count, count)
            infos[seq] = {
                "first": first, "num_frames": count, "height": size[0], "width": size[1],
                "object_ids": [int(i) for i in np.flatnonzero(ids[1:255]) + 1],
                "frame_names": frame_names[:count], "frame_stride": stride, "source": source,
            }  # fmt: skip
    np.save(out / _OFFSETS, np.asarray(entries, np.int64).reshape(-1, 2))
    index = {
        "format": PACK_FORMAT, "source_root": str(src), "short_side": short_side,
        "jpeg_quality": jpeg_quality, "num_entries": len(entries), "data_bytes": offset,
        "pack_seconds": round(time.perf_counter() - start, 2), "sequences": infos,
    }  # fmt: skip
    (out / _INDEX).write_text(json.dumps(index, indent=1))
    return out


# ----------------------------------------------------------------------------- reading


class PackedDataset:
    """Random access to a pack made by :func:`pack_dataset` (memory-mapped, lazy decode)."""

    def __init__(self, path: str | Path, sequences: Sequence[str] | None = None) -> None:
        self.path = Path(path)
        if not (self.path / _INDEX).is_file():
            raise ValueError(f"not a complete pack (no {_INDEX}): {self.path}")
        self.index: dict[str, Any] = json.loads((self.path / _INDEX).read_text())
        if self.index.get("format") != PACK_FORMAT:
            raise ValueError(f"{self.path}: unknown pack format {self.index.get('format')!r}")
        infos = self.index["sequences"]
        names = list(infos) if sequences is None else list(sequences)
        missing = [n for n in names if n not in infos]
        if missing:
            raise KeyError(f"sequences not in the pack: {missing}")
        self._infos = {n: infos[n] for n in names}
        self._offsets = np.load(self.path / _OFFSETS)
        self._data: np.memmap | None = None

    def __getstate__(self) -> dict[str, Any]:  # do not pickle the memory map
        return {**self.__dict__, "_data": None}

    @property
    def sequences(self) -> list[str]:
        return list(self._infos)

    def __len__(self) -> int:
        return len(self._infos)

    def __contains__(self, name: object) -> bool:
        return name in self._infos

    def subset(self, names: Sequence[str]) -> PackedDataset:
        """The same pack restricted to ``names`` (e.g. a train / validation split)."""
        return PackedDataset(self.path, names)

    def info(self, seq: str) -> dict[str, Any]:
        return self._infos[seq]

    def num_frames(self, seq: str) -> int:
        return int(self._infos[seq]["num_frames"])

    def size(self, seq: str) -> tuple[int, int]:
        info = self._infos[seq]
        return int(info["height"]), int(info["width"])

    def object_ids(self, seq: str) -> list[int]:
        return list(self._infos[seq]["object_ids"])

    def _buffer(self, seq: str, i: int, kind: int) -> np.ndarray:
        n = self.num_frames(seq)
        if not -n <= i < n:
            raise IndexError(f"{seq}: frame {i} out of range ({n} frames)")
        if self._data is None:
            self._data = np.memmap(self.path / _DATA, dtype=np.uint8, mode="r")
        off, length = self._offsets[self._infos[seq]["first"] + 2 * (i % n) + kind]
        return np.asarray(self._data[off : off + length])

    def frame(self, seq: str, i: int) -> np.ndarray:
        """Frame ``i`` of ``seq`` as RGB uint8 [H, W, 3]."""
        bgr = cv2.imdecode(self._buffer(seq, i, 0), cv2.IMREAD_COLOR)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def labels(self, seq: str, i: int) -> np.ndarray:
        """Label map of frame ``i`` (uint8 [H, W]; 0 background, ids as in the source)."""
        return cv2.imdecode(self._buffer(seq, i, 1), cv2.IMREAD_UNCHANGED)

    def clip(self, seq: str, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Frames [T, H, W, 3] and labels [T, H, W] at ``indices``."""
        frames = np.stack([self.frame(seq, i) for i in indices])
        return frames, np.stack([self.labels(seq, i) for i in indices])


# ----------------------------------------------------------------------------- sampling


def max_skip_at(
    step: int,
    total_steps: int,
    values: Sequence[int] = (5, 10, 15, 5),
    fractions: Sequence[float] = (0.1, 0.3, 0.8),
) -> int:
    """XMem's max-skip curriculum: ``values[k]`` from ``fractions[k-1] * total_steps`` on."""
    if len(values) != len(fractions) + 1:
        raise ValueError("need one more value than fractions")
    k = sum(step >= f * total_steps for f in fractions)
    return int(values[k])


def sample_frame_indices(
    rng: np.random.Generator, length: int, num_frames: int, max_skip: int, reverse_prob: float = 0.0
) -> list[int]:
    """``num_frames`` increasing indices in ``[0, length)`` with gaps in ``[1, max_skip]``.

    The skip is capped so the clip fits; with probability ``reverse_prob`` the order flips.
    """
    if length < num_frames:
        raise ValueError(f"need {num_frames} frames, sequence has {length}")
    if num_frames == 1:
        return [int(rng.integers(length))]
    skip = max(1, min(int(max_skip), (length - 1) // (num_frames - 1)))
    gaps = rng.integers(1, skip + 1, num_frames - 1)
    start = int(rng.integers(0, length - int(gaps.sum())))
    idx = [start, *(start + np.cumsum(gaps)).tolist()]
    if reverse_prob and rng.random() < reverse_prob:
        idx.reverse()
    return [int(i) for i in idx]


class ClipSampler:
    """XMem-style training clips from a :class:`PackedDataset` (§1.17).

    ``max_skip`` is an int or a function of the step (e.g. ``lambda s: max_skip_at(s, N)``);
    it is in source frames, divided by a sequence's ``frame_stride`` (5 for YouTube-VOS).
    """

    def __init__(
        self,
        dataset: PackedDataset,
        *,
        num_frames: int = 3,
        max_skip: int | Callable[[int], int] = 5,
        max_objects: int = 3,
        crop_size: tuple[int, int] | None = None,
        composite_prob: float = 0.5,
        augment: AugmentConfig | None = None,
        reverse_prob: float = 0.0,
        max_tries: int = 20,
        lookalike_prob: float = 0.0,
    ) -> None:
        self.dataset = dataset
        self.num_frames = num_frames
        self.max_skip = max_skip
        self.max_objects = max_objects
        self.augment = augment or AugmentConfig()
        if crop_size is not None:
            self.augment = replace(self.augment, crop_size=tuple(crop_size))
        self.composite_prob = composite_prob
        self.lookalike_prob = lookalike_prob
        self.reverse_prob = reverse_prob
        self.max_tries = max_tries
        self.sequences = [
            s
            for s in dataset.sequences
            if dataset.num_frames(s) >= num_frames and dataset.object_ids(s)
        ]
        if not self.sequences:
            raise ValueError(f"no sequence has >= {num_frames} frames and an object")

    def skip_at(self, step: int) -> int:
        return int(self.max_skip(step) if callable(self.max_skip) else self.max_skip)

    def sample_single(
        self,
        rng: np.random.Generator,
        max_skip: int,
        max_objects: int,
        exclude: Sequence[str] = (),
    ) -> Clip:
        """One augmented clip from one sequence with 1..``max_objects`` objects."""
        pool = [s for s in self.sequences if s not in exclude] or self.sequences
        for _ in range(self.max_tries):
            seq = pool[int(rng.integers(len(pool)))]
            stride = int(self.dataset.info(seq).get("frame_stride", 1))
            idx = sample_frame_indices(
                rng, self.dataset.num_frames(seq), self.num_frames,
                max(1, max_skip // stride), self.reverse_prob,
            )  # fmt: skip
            frames, labels = self.dataset.clip(seq, idx)
            frames, labels, count = augment_clip(frames, labels, rng, self.augment)
            if count == 0:
                continue
            keep = (rng.permutation(count)[: min(count, max_objects)] + 1).tolist()
            return Clip(frames, renumber_labels(labels, keep), len(keep), seq, tuple(idx))
        raise RuntimeError(f"no clip with a first-frame object after {self.max_tries} tries")

    def sample(self, rng: np.random.Generator, step: int = 0) -> Clip:
        """One training clip; pastes objects of other sequences with ``composite_prob``;
        with ``lookalike_prob`` a one-object clip first gets a second instance of its own
        object (shifted, scaled, drifting) as another id: a look-alike pair."""
        skip = self.skip_at(step)
        clip = self.sample_single(rng, skip, self.max_objects)
        pair = self.lookalike_prob and self.max_objects >= 2 and clip.num_objects == 1
        if pair and rng.random() < self.lookalike_prob:
            clip = composite_clip(clip, clip, rng, max_objects=2, scale_range=(0.7, 1.0),
                                  max_shift=0.35)  # fmt: skip
        for _ in range(self.max_objects):
            if clip.num_objects >= self.max_objects or rng.random() >= self.composite_prob:
                break
            room = self.max_objects - clip.num_objects
            other = self.sample_single(rng, skip, room, exclude=clip.sequence.split("+"))
            clip = composite_clip(clip, other, rng, max_objects=self.max_objects)
        return clip


class PackedClipSource:
    """Adapter for the training loop: ``sample(rng, step) -> (frames, labels, O)``.

    Reads ``options.data`` (pack path), ``num_frames``, ``crop_size`` (int), ``max_objects``,
    ``steps`` (for the skip curriculum) and ``val_sequences`` (held out from training).
    """

    def __init__(self, options: Any) -> None:
        dataset = PackedDataset(options.data)
        held_out = set(getattr(options, "val_sequences", None) or ())
        if held_out:
            dataset = dataset.subset([s for s in dataset.sequences if s not in held_out])
        total = int(getattr(options, "steps", 0)) or 1
        crop = int(getattr(options, "crop_size", 240))
        augment = AugmentConfig(
            motion_blur_prob=float(getattr(options, "motion_blur_prob", 0.0)),
            noise_prob=float(getattr(options, "noise_prob", 0.0)),
            gamma=float(getattr(options, "gamma", 0.0)),
        )
        self.sampler = ClipSampler(
            dataset,
            num_frames=int(getattr(options, "num_frames", 3)),
            max_skip=lambda step: max_skip_at(step, total),
            max_objects=int(getattr(options, "max_objects", 3)),
            crop_size=(crop, int(getattr(options, "crop_width", 0)) or crop),
            augment=augment,
            lookalike_prob=float(getattr(options, "lookalike_prob", 0.0)),
        )
        self.static_elastic = float(getattr(options, "static_elastic", 0.0))
        self.static_occluder_prob = float(getattr(options, "static_occluder_prob", 0.0))

        # Static-image stage (spec §1.13 stage 1): the first ``static_fraction`` of the steps
        # train on single frames turned into clips by random deformations.
        self.static_steps = int(float(getattr(options, "static_fraction", 0.0)) * total)

    def sample(self, rng: np.random.Generator, step: int) -> tuple[np.ndarray, np.ndarray, int]:
        if step < self.static_steps:
            return self.sample_static(rng)
        clip = self.sampler.sample(rng, step)
        return clip.frames, clip.labels, clip.num_objects

    def sample_static(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
        sampler = self.sampler
        for _ in range(sampler.max_tries):
            name = sampler.sequences[int(rng.integers(len(sampler.sequences)))]
            index = int(rng.integers(sampler.dataset.num_frames(name)))
            clip = static_clip(
                sampler.dataset.frame(name, index),
                sampler.dataset.labels(name, index),
                rng,
                sampler.num_frames,
                max_objects=sampler.max_objects,
                augment=sampler.augment,
                name=name,
                elastic=self.static_elastic,
                occluder_prob=self.static_occluder_prob,
            )
            if clip.num_objects > 0:
                return clip.frames, clip.labels, clip.num_objects
        raise ValueError("no static clip with a visible object could be drawn")


def clips_to_tensors(clips: Sequence[Clip]) -> dict[str, Any]:
    """Optional torch adapter: frames float [B, T, 3, H, W] in [0, 1], labels int64."""
    import torch

    frames = torch.from_numpy(np.stack([c.frames for c in clips])).permute(0, 1, 4, 2, 3)
    labels = torch.from_numpy(np.stack([c.labels for c in clips]).astype(np.int64))
    return {
        "frames": frames.float().div_(255.0),
        "labels": labels,
        "num_objects": [c.num_objects for c in clips],
        "sequences": [c.sequence for c in clips],
    }
