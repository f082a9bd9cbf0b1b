"""Clip-level augmentation for VOS training (spec §1.13; §1.17 "VOS crops / frames / objects").

Torch-free (numpy + OpenCV). Follows XMem's ``vos_dataset.py``: one random draw per clip for
the geometry (``RandomResizedCrop`` with scale 0.36-1.0 and aspect 0.75-1.33, horizontal flip)
and colour (jitter, rare grayscale), plus a small per-frame jitter (colour and affine). Every
geometric transform is a single ``warpAffine`` per frame: images bilinear, labels nearest, so
the masks stay exact. Label maps use 0 = background, ``k`` = object ``k``, 255 = void.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

__all__ = [
    "AugmentConfig",
    "Clip",
    "composite_clip",
    "static_clip",
    "static_frame",
    "adjust_color",
    "affine_matrix",
    "augment_clip",
    "elastic_maps",
    "first_frame_ids",
    "motion_blur",
    "random_resized_crop_box",
    "renumber_labels",
    "warp_frame",
]

IMAGE_FILL = (124, 116, 104)  # ImageNet mean, XMem's fill colour for affine borders


@dataclass
class Clip:
    """A training clip (§1.17): frames [T, H, W, 3] RGB uint8, labels [T, H, W] uint8 with
    ids 1..``num_objects`` (all present in frame 0); ``frame_indices`` into the sequence."""

    frames: np.ndarray
    labels: np.ndarray
    num_objects: int
    sequence: str
    frame_indices: tuple[int, ...] = field(default=())


@dataclass(frozen=True)
class AugmentConfig:
    """Parameters of :func:`augment_clip` (XMem-like defaults, §1.17)."""

    crop_size: tuple[int, int] = (240, 240)  # (height, width) of the output
    random_crop: bool = True  # False: resize the whole frame to crop_size
    scale: tuple[float, float] = (0.36, 1.0)  # crop area as a fraction of the frame area
    ratio: tuple[float, float] = (0.75, 1.33)  # crop aspect (w / h) over the output's aspect
    hflip_prob: float = 0.5
    brightness: float = 0.2  # per-clip colour jitter amplitudes
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.02  # fraction of the hue circle
    grayscale_prob: float = 0.05
    frame_color: float = 0.03  # extra per-frame relative colour jitter
    frame_degrees: float = 3.0  # per-frame affine jitter
    frame_shear: float = 3.0
    frame_translate: float = 0.02  # fraction of the frame size
    frame_scale: tuple[float, float] = (0.97, 1.03)
    fill: tuple[int, int, int] = IMAGE_FILL
    max_tries: int = 5  # crops redrawn until frame 0 keeps an object pixel
    # Per-frame photometric extras (off by default; the recipe turns them on): a linear
    # motion blur of a random length and angle, Gaussian sensor noise, a gamma change.
    motion_blur_prob: float = 0.0
    motion_blur_max: int = 15  # longest blur in output pixels
    noise_prob: float = 0.0
    noise_std: float = 8.0  # in 0-255 units, drawn uniformly up to this
    gamma: float = 0.0  # per-clip gamma drawn in [1 - gamma, 1 + gamma]

    @classmethod
    def resize_only(cls, crop_size: tuple[int, int]) -> AugmentConfig:
        """No randomness: every frame is resized to ``crop_size`` (for validation clips)."""
        return cls(
            crop_size=crop_size, random_crop=False, hflip_prob=0.0, brightness=0.0,
            contrast=0.0, saturation=0.0, hue=0.0, grayscale_prob=0.0, frame_color=0.0,
            frame_degrees=0.0, frame_shear=0.0, frame_translate=0.0, frame_scale=(1.0, 1.0),
        )  # fmt: skip


def affine_matrix(
    center: tuple[float, float],
    angle: float = 0.0,
    scale: float = 1.0,
    shear: tuple[float, float] = (0.0, 0.0),
    translate: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """3x3 matrix: rotate (degrees), scale and shear (degrees) about ``center``, then shift."""
    cx, cy = center
    a = math.radians(angle)
    rot = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    sh = np.array(
        [[1, math.tan(math.radians(shear[0])), 0], [math.tan(math.radians(shear[1])), 1, 0]]
        + [[0, 0, 1]]
    )
    scl = np.diag([scale, scale, 1.0])
    to_origin = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]], dtype=np.float64)
    back = np.array([[1, 0, cx + translate[0]], [0, 1, cy + translate[1]], [0, 0, 1]])
    return back @ rot @ sh @ scl @ to_origin


def random_resized_crop_box(
    height: int,
    width: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.36, 1.0),
    ratio: tuple[float, float] = (0.75, 1.33),
) -> tuple[int, int, int, int]:
    """``(y0, x0, h, w)`` drawn like torchvision's ``RandomResizedCrop.get_params``."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            y0 = int(rng.integers(0, height - h + 1))
            x0 = int(rng.integers(0, width - w + 1))
            return y0, x0, h, w
    in_ratio = width / height  # fallback: central crop
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _crop_matrix(box: tuple[int, int, int, int], out_hw: tuple[int, int], flip: bool):
    """Maps source pixel coordinates of ``box`` onto the output grid (pixel centres)."""
    y0, x0, h, w = box
    sy, sx = out_hw[0] / h, out_hw[1] / w
    m = np.array(
        [[sx, 0, (0.5 - x0) * sx - 0.5], [0, sy, (0.5 - y0) * sy - 0.5], [0, 0, 1]],
        dtype=np.float64,
    )
    if flip:
        m = np.array([[-1, 0, out_hw[1] - 1], [0, 1, 0], [0, 0, 1]], dtype=np.float64) @ m
    return m


def warp_frame(
    image: np.ndarray | None,
    labels: np.ndarray | None,
    matrix: np.ndarray,
    out_hw: tuple[int, int],
    fill: tuple[int, int, int] = IMAGE_FILL,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Warp an image (bilinear, ``fill`` outside) and/or labels (nearest, 0 outside)."""
    size = (int(out_hw[1]), int(out_hw[0]))
    perspective = matrix.shape == (3, 3) and not np.allclose(matrix[2], (0, 0, 1))
    warp = cv2.warpPerspective if perspective else cv2.warpAffine
    mat = matrix if perspective else matrix[:2]
    out_img = out_lab = None
    if image is not None:
        out_img = warp(
            image, mat, size, flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT, borderValue=tuple(int(v) for v in fill),
        )  # fmt: skip
    if labels is not None:
        out_lab = warp(
            labels, mat, size, flags=cv2.INTER_NEAREST,
            borderMode=cv2.BORDER_CONSTANT, borderValue=0,
        )  # fmt: skip
    return out_img, out_lab


def first_frame_ids(labels: np.ndarray) -> list[int]:
    """Object ids (1..254) present in ``labels[0]`` (labels [T, H, W]) or in a single map."""
    first = labels[0] if labels.ndim == 3 else labels
    counts = np.bincount(first.ravel(), minlength=256)
    return [int(i) for i in np.flatnonzero(counts[1:255]) + 1]


def renumber_labels(labels: np.ndarray, keep_ids: list[int] | np.ndarray) -> np.ndarray:
    """``keep_ids[k]`` becomes ``k + 1``; every other value (void included) becomes 0."""
    lut = np.zeros(256, np.uint8)
    lut[np.asarray(keep_ids, dtype=np.int64)] = np.arange(1, len(keep_ids) + 1, dtype=np.uint8)
    flat = np.ascontiguousarray(labels).reshape(-1, labels.shape[-1])
    return cv2.LUT(flat, lut).reshape(labels.shape)


def adjust_color(
    image: np.ndarray,
    brightness: float = 1.0,
    contrast: float = 1.0,
    saturation: float = 1.0,
    hue: float = 0.0,
    grayscale: bool = False,
) -> np.ndarray:
    """Brightness, contrast, saturation (factors), hue (turns) of an RGB uint8 image.

    torchvision's formulas with one clip at the end: the first three are one linear colour
    transform (``cv2.transform``), the hue shift is done in 8-bit HSV (2 degree steps).
    """
    out = image
    if (brightness, contrast, saturation) != (1.0, 1.0, 1.0):
        w = np.array([0.299, 0.587, 0.114])
        mean = brightness * float(cv2.mean(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))[0])
        sc = saturation * contrast * brightness
        m = sc * np.eye(3) + (1 - saturation) * contrast * brightness * np.outer(np.ones(3), w)
        offset = np.full((3, 1), (1 - contrast) * mean)
        out = cv2.transform(image, np.hstack([m, offset]))
    shift = int(round(hue * 180.0)) % 180
    if shift:
        hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = (hsv[..., 0].astype(np.int16) + shift) % 180
        out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if grayscale:
        out = cv2.cvtColor(cv2.cvtColor(out, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    return out


def motion_blur(image: np.ndarray, length: int, angle: float) -> np.ndarray:
    """A linear motion blur ``length`` pixels long at ``angle`` degrees (labels are kept:
    the mask stays the sharp object's, as annotators draw it)."""
    if length < 2:
        return image
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.0
    centre = ((length - 1) / 2, (length - 1) / 2)
    rotation = cv2.getRotationMatrix2D(centre, angle, 1.0)
    kernel = cv2.warpAffine(kernel, rotation, (length, length), flags=cv2.INTER_LINEAR)
    kernel /= max(float(kernel.sum()), 1e-6)
    return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT)


def _photometric(image: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig,
                 gamma: float) -> np.ndarray:  # fmt: skip
    """The per-frame extras of ``cfg``: gamma, motion blur, noise (each only if enabled)."""
    out = image
    if gamma != 1.0:
        table = np.clip(255.0 * (np.arange(256) / 255.0) ** gamma, 0, 255).astype(np.uint8)
        out = cv2.LUT(out, table)
    if cfg.motion_blur_prob and rng.random() < cfg.motion_blur_prob:
        length = int(rng.integers(3, max(cfg.motion_blur_max, 3) + 1)) | 1  # odd: centred
        out = motion_blur(out, length, float(rng.uniform(0, 180)))
    if cfg.noise_prob and rng.random() < cfg.noise_prob:
        noise = rng.normal(0.0, rng.uniform(0, cfg.noise_std), out.shape)
        out = np.clip(out.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return out


def _frame_affine(rng: np.random.Generator, h: int, w: int, cfg: AugmentConfig) -> np.ndarray:
    t = cfg.frame_translate
    return affine_matrix(
        ((w - 1) / 2, (h - 1) / 2),
        angle=rng.uniform(-cfg.frame_degrees, cfg.frame_degrees),
        scale=rng.uniform(*cfg.frame_scale),
        shear=tuple(rng.uniform(-cfg.frame_shear, cfg.frame_shear, 2)),
        translate=(rng.uniform(-t, t) * w, rng.uniform(-t, t) * h),
    )


def augment_clip(
    frames: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    config: AugmentConfig | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Augment a clip (frames [T, H, W, 3] RGB uint8, labels [T, H, W] uint8).

    Returns ``(frames, labels, num_objects)`` at ``config.crop_size``; the ids present in the
    first output frame are renumbered 1..O (in increasing original id), every other id and
    void become background. The geometry is redrawn up to ``max_tries`` times until frame 0
    keeps at least one object pixel; ``num_objects`` is 0 if that never happens.
    """
    cfg = config or AugmentConfig()
    t_len, h, w = labels.shape
    out_hw = (int(cfg.crop_size[0]), int(cfg.crop_size[1]))
    matrices: list[np.ndarray] = []
    for _ in range(max(1, cfg.max_tries)):
        if cfg.random_crop:  # the box's aspect around the output's: no stretching
            aspect = out_hw[1] / out_hw[0]
            ratio = (cfg.ratio[0] * aspect, cfg.ratio[1] * aspect)
            box = random_resized_crop_box(h, w, rng, cfg.scale, ratio)
        else:
            box = (0, 0, h, w)
        crop = _crop_matrix(box, out_hw, bool(rng.random() < cfg.hflip_prob))
        matrices = [crop @ _frame_affine(rng, h, w, cfg) for _ in range(t_len)]
        _, lab0 = warp_frame(None, labels[0], matrices[0], out_hw)
        if first_frame_ids(lab0):
            break
    # Colour: one draw per clip, small per-frame perturbation.
    amps = (cfg.brightness, cfg.contrast, cfg.saturation)
    b, c, s = (rng.uniform(max(0.0, 1 - a), 1 + a) for a in amps)
    hue = rng.uniform(-cfg.hue, cfg.hue)
    gray = bool(rng.random() < cfg.grayscale_prob)
    gamma = float(rng.uniform(1 - cfg.gamma, 1 + cfg.gamma)) if cfg.gamma else 1.0
    out_frames = np.empty((t_len, *out_hw, 3), np.uint8)
    out_labels = np.empty((t_len, *out_hw), np.uint8)
    for t in range(t_len):
        img, lab = warp_frame(frames[t], labels[t], matrices[t], out_hw, cfg.fill)
        j = rng.uniform(1 - cfg.frame_color, 1 + cfg.frame_color, 3)
        img = adjust_color(img, b * j[0], c * j[1], s * j[2], hue, gray)
        out_frames[t] = _photometric(img, rng, cfg, gamma)
        out_labels[t] = lab
    ids = first_frame_ids(out_labels)
    return out_frames, renumber_labels(out_labels, ids), len(ids)


# ----------------------------------------------------------------------------- compositing


def _paste_matrices(
    rng: np.random.Generator, t_len: int, h: int, w: int,
    scale_range: tuple[float, float], max_shift: float, jitter: float,
) -> list[np.ndarray]:  # fmt: skip
    """One random shift/scale for the clip plus a small per-frame random walk."""
    size = np.array([w, h], np.float64)
    scale = rng.uniform(*scale_range)
    offset = rng.uniform(-max_shift, max_shift, 2) * size
    mats = []
    for _ in range(t_len):
        mats.append(affine_matrix(((w - 1) / 2, (h - 1) / 2), scale=scale, translate=tuple(offset)))
        offset = offset + rng.normal(0.0, jitter, 2) * size
        scale *= 1.0 + rng.normal(0.0, jitter)
    return mats


def composite_clip(
    base: Clip,
    other: Clip,
    rng: np.random.Generator,
    *,
    max_objects: int | None = None,
    transform: bool = True,
    scale_range: tuple[float, float] = (0.6, 1.0),
    max_shift: float = 0.25,
    jitter: float = 0.02,
    max_tries: int = 5,
) -> Clip:
    """Paste the objects of ``other`` (same T, H, W) over ``base`` (multi-object data, §1.17).

    Pasted objects get ids ``base.num_objects + 1 ...`` and occlude the base where they
    overlap (their pixels and labels replace the base's), so masks stay exact. With
    ``transform`` the pasted pixels and labels get the same random shift/scale (bilinear /
    nearest) plus a small per-frame drift; draws are retried until every object is visible
    in frame 0, and ids still missing from frame 0 are dropped and the rest renumbered.
    Returns ``base`` unchanged if nothing of ``other`` lands in frame 0.
    """
    if base.labels.shape != other.labels.shape:
        raise ValueError(f"clip shapes differ: {base.labels.shape} vs {other.labels.shape}")
    room = other.num_objects
    if max_objects is not None:
        room = min(room, max_objects - base.num_objects)
    if room <= 0:
        return base
    src_labels = renumber_labels(other.labels, list(range(1, room + 1)))
    t_len, h, w = base.labels.shape
    best: tuple[np.ndarray, np.ndarray, list[int]] | None = None
    for _ in range(max(1, max_tries) if transform else 1):
        if transform:
            mats = _paste_matrices(rng, t_len, h, w, scale_range, max_shift, jitter)
            warped = [
                warp_frame(other.frames[t], src_labels[t], mats[t], (h, w)) for t in range(t_len)
            ]
            o_frames = np.stack([f for f, _ in warped])
            o_labels = np.stack([lab for _, lab in warped])
        else:
            o_frames, o_labels = other.frames, src_labels
        if not o_labels[0].any():
            continue
        pasted = o_labels > 0
        labels = np.where(pasted, o_labels + np.uint8(base.num_objects), base.labels)
        frames = np.where(pasted[..., None], o_frames, base.frames)
        ids = first_frame_ids(labels)
        if best is None or len(ids) > len(best[2]):
            best = (frames, labels, ids)
        if len(ids) == base.num_objects + room:
            break
    if best is None:
        return base
    frames, labels, ids = best
    name = f"{base.sequence}+{other.sequence}"
    return Clip(frames, renumber_labels(labels, ids), len(ids), name, base.frame_indices)


# ----------------------------------------------------------------------------- static images


def _static_matrix(
    rng: np.random.Generator, h: int, w: int, degrees: float, scale: tuple[float, float],
    shear: float, translate: float, perspective: float,
) -> np.ndarray:  # fmt: skip
    affine = affine_matrix(
        ((w - 1) / 2, (h - 1) / 2),
        angle=rng.uniform(-degrees, degrees),
        scale=rng.uniform(*scale),
        shear=tuple(rng.uniform(-shear, shear, 2)),
        translate=(rng.uniform(-translate, translate) * w, rng.uniform(-translate, translate) * h),
    )
    if perspective <= 0:
        return affine
    corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float32)
    inward = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], np.float32)
    moved = corners + inward * rng.uniform(0, perspective / 2, (4, 2)) * np.float32([w, h])
    return cv2.getPerspectiveTransform(corners, moved.astype(np.float32)) @ affine


def elastic_maps(
    rng: np.random.Generator, h: int, w: int, amplitude: float, grid: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """``cv2.remap`` maps of a smooth random non-rigid warp: displacements drawn on a coarse
    ``grid`` (up to ``amplitude`` times the short side) and interpolated bicubically."""
    side = amplitude * min(h, w)
    coarse = rng.uniform(-side, side, (2, grid + 1, grid + 1)).astype(np.float32)
    dx, dy = (cv2.resize(c, (w, h), interpolation=cv2.INTER_CUBIC) for c in coarse)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return xx + dx, yy + dy


def _warp_static(
    image: np.ndarray, labels: np.ndarray, matrix: np.ndarray, rng: np.random.Generator,
    elastic: float, fill,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """``matrix`` (3x3, maybe perspective), then a non-rigid warp of amplitude ``elastic``,
    as one resampling: image bilinear, labels nearest, so the masks stay exact."""
    h, w = labels.shape
    if elastic <= 0:
        return warp_frame(image, labels, matrix, (h, w), fill)
    x, y = elastic_maps(rng, h, w, elastic)  # where each output pixel looks in the warp
    inv = np.linalg.inv(matrix)
    depth = inv[2, 0] * x + inv[2, 1] * y + inv[2, 2]
    src_x = ((inv[0, 0] * x + inv[0, 1] * y + inv[0, 2]) / depth).astype(np.float32)
    src_y = ((inv[1, 0] * x + inv[1, 1] * y + inv[1, 2]) / depth).astype(np.float32)
    image = cv2.remap(image, src_x, src_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                      borderValue=tuple(int(v) for v in fill))  # fmt: skip
    labels = cv2.remap(labels, src_x, src_y, cv2.INTER_NEAREST,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)  # fmt: skip
    return image, labels


def static_frame(
    image: np.ndarray, labels: np.ndarray, rng: np.random.Generator, *, degrees: float = 15.0,
    scale: tuple[float, float] = (0.9, 1.1), shear: float = 10.0, translate: float = 0.1,
    perspective: float = 0.1, elastic: float = 0.0, fill: tuple[int, int, int] = IMAGE_FILL,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """One random deformation of ``image`` and ``labels`` (ids kept): affine + perspective,
    then non-rigid with ``elastic`` > 0, as one resampling (exact masks)."""
    h, w = labels.shape
    matrix = _static_matrix(rng, h, w, degrees, scale, shear, translate, perspective)
    return _warp_static(image, labels, matrix, rng, elastic, fill)


def _occlude(frames: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> None:
    """Paste one occluder in front of every frame (in place): a patch of the first frame
    (or a solid colour) drifting a little; what it covers becomes background."""
    t_len, h, w = labels.shape
    oh, ow = int(h * rng.uniform(0.15, 0.5)), int(w * rng.uniform(0.1, 0.4))
    if rng.random() < 0.5:
        y, x = int(rng.integers(0, h - oh + 1)), int(rng.integers(0, w - ow + 1))
        patch = frames[0, y : y + oh, x : x + ow].copy()
    else:
        patch = np.empty((oh, ow, 3), np.uint8)
        patch[:] = rng.integers(0, 256, 3)
    at = rng.uniform([-oh / 2, -ow / 2], [h - oh / 2, w - ow / 2])
    velocity = rng.uniform(-0.04, 0.04, 2) * (h, w)
    for t in range(t_len):
        y, x = (at + velocity * t).astype(int)
        y0, x0, y1, x1 = max(y, 0), max(x, 0), min(y + oh, h), min(x + ow, w)
        if y1 <= y0 or x1 <= x0:
            continue
        frames[t, y0:y1, x0:x1] = patch[y0 - y : y1 - y, x0 - x : x1 - x]
        labels[t, y0:y1, x0:x1] = 0


def static_clip(
    image: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    num_frames: int = 3,
    *,
    max_objects: int = 3,
    augment: AugmentConfig | None = None,
    degrees: float = 15.0,
    scale: tuple[float, float] = (0.9, 1.1),
    shear: float = 10.0,
    translate: float = 0.1,
    perspective: float = 0.1,
    fill: tuple[int, int, int] = IMAGE_FILL,
    max_tries: int = 10,
    name: str = "static",
    elastic: float = 0.0,
    occluder_prob: float = 0.0,
) -> Clip:
    """A clip from one image by random affine + perspective warps (§1.13 stage 1, XMem).

    ``image`` RGB uint8 [H, W, 3], ``labels`` uint8 [H, W] (0/255 saliency masks count as one
    object). Every frame gets its own warp, identical for image (bilinear, ``fill`` outside)
    and labels (nearest, 0 outside), then (with ``elastic`` > 0) its own smooth non-rigid
    warp of up to ``elastic`` times the short side; with probability ``occluder_prob`` an
    occluder crosses the frames (its pixels become background). ``augment`` (e.g. a crop to
    384x384) is applied after.
    Up to ``max_objects`` ids present in frame 0 are kept, renumbered 1..O (O may be 0).
    """
    h, w = labels.shape
    values = np.unique(labels)
    if 255 in values and np.isin(values, (0, 255)).all():
        labels = (labels == 255).astype(np.uint8)
    labels = renumber_labels(labels, first_frame_ids(labels))
    deformation = {"degrees": degrees, "scale": scale, "shear": shear, "translate": translate,
                   "perspective": perspective, "elastic": elastic, "fill": fill}  # fmt: skip
    for _ in range(max(1, max_tries)):
        warped = [static_frame(image, labels, rng, **deformation) for _ in range(num_frames)]
        out_labels = np.stack([lab for _, lab in warped])
        if first_frame_ids(out_labels):
            break
    frames = np.stack([img for img, _ in warped])
    if occluder_prob and rng.random() < occluder_prob:
        _occlude(frames, out_labels, rng)
    if augment is not None:
        frames, out_labels, _ = augment_clip(frames, out_labels, rng, augment)
    ids = first_frame_ids(out_labels)
    keep = rng.permutation(np.asarray(ids, np.int64))[:max_objects].tolist()
    return Clip(
        frames, renumber_labels(out_labels, keep), len(keep), name, tuple(range(num_frames))
    )
