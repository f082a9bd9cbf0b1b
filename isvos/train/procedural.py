"""Procedural clips with exact masks for what DAVIS does not cover (torch-free).

Each case renders sprites (a shape, an appearance, a label, a path) over a background on a
canvas, then looks at the canvas through a camera window; labels come from the same
rendering, so they are exact. The cases are the failures a new user meets first: solid and
textureless objects, a logo, camera pans and zooms, occlusion and re-appearance, objects
leaving the frame, lighting changes, heavy compression, small objects and look-alikes.

    frames, labels = CASES["solid_squares"](np.random.default_rng(0))
    # frames [T, H, W, 3] uint8, labels [T, H, W] uint8 (ids 1..n; 0 background)

``flat=True`` paints every sprite a flat colour of its own and skips the photometric
effects (lighting, compression): tests read the labels back from the pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from .synthetic import _texture

FRAMES, HEIGHT, WIDTH = 40, 240, 320
# Flat colours of the ``flat`` rendering: background, then sprites in order.
FLAT = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0],
                 [255, 0, 255]], np.uint8)  # fmt: skip


@dataclass
class Sprite:
    shape: np.ndarray  # bool [h, w]
    look: np.ndarray  # uint8 [h, w, 3]
    label: int  # 0: drawn but not an object (an occluder, an unlabelled look-alike)
    path: Callable[[int], tuple[float, float]]  # top-left (y, x) on the canvas at frame t


@dataclass
class Scene:
    background: np.ndarray  # uint8 [H', W', 3], the canvas
    sprites: list[Sprite]  # back to front
    window: Callable[[int], tuple[float, float, float]] | None = None  # (y, x, scale) at t
    frames: int = FRAMES
    size: tuple[int, int] = (HEIGHT, WIDTH)

    def render(self, flat: bool = False,
               times: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """The frames at ``times`` (all ``frames`` by default) and their labels."""
        times = list(range(self.frames)) if times is None else times
        height, width = self.size
        images = np.zeros((len(times), height, width, 3), np.uint8)
        labels = np.zeros((len(times), height, width), np.uint8)
        for i, t in enumerate(times):
            canvas = np.zeros_like(self.background) if flat else self.background.copy()
            canvas_labels = np.zeros(canvas.shape[:2], np.uint8)
            for order, sprite in enumerate(self.sprites, start=1):
                look = np.broadcast_to(FLAT[order], sprite.look.shape) if flat else sprite.look
                _paste(canvas, canvas_labels, sprite, look, t)
            y, x, scale = self.window(t) if self.window else (0.0, 0.0, 1.0)
            images[i] = _view(canvas, y, x, scale, (height, width))
            labels[i] = _view(canvas_labels, y, x, scale, (height, width))
        return images, labels


def _paste(canvas: np.ndarray, labels: np.ndarray, sprite: Sprite, look, t: int) -> None:
    """Draw ``sprite`` at its place at frame ``t``, clipped to the canvas."""
    top, left = (int(round(v)) for v in sprite.path(t))
    h, w = sprite.shape.shape
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + h, canvas.shape[0]), min(left + w, canvas.shape[1])
    if y0 >= y1 or x0 >= x1:
        return  # wholly outside
    inside = sprite.shape[y0 - top : y1 - top, x0 - left : x1 - left]
    canvas[y0:y1, x0:x1][inside] = look[y0 - top : y1 - top, x0 - left : x1 - left][inside]
    labels[y0:y1, x0:x1][inside] = sprite.label


def _view(canvas: np.ndarray, y: float, x: float, scale: float, size) -> np.ndarray:
    """The window of ``size / scale`` canvas pixels at (y, x), resized to ``size`` with
    nearest sampling (so the labels stay exact)."""
    height, width = size
    h, w = int(round(height / scale)), int(round(width / scale))
    y, x = int(round(y)), int(round(x))
    crop = canvas[y : y + h, x : x + w]
    if crop.shape[:2] != (height, width):
        crop = cv2.resize(crop, (width, height), interpolation=cv2.INTER_NEAREST)
    return crop


# ------------------------------------------------------------------ building blocks


def _busy(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A cluttered background: texture plus random rectangles and lines."""
    image = _texture(rng, height, width, rng.uniform(60, 200, 3)).astype(np.uint8)
    for _ in range(40):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        y, x = int(rng.integers(0, height)), int(rng.integers(0, width))
        if rng.random() < 0.5:
            size = rng.integers(4, 30, 2)
            cv2.rectangle(image, (x, y), (x + int(size[1]), y + int(size[0])), colour, -1)
        else:
            end = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            cv2.line(image, (x, y), end, colour, int(rng.integers(1, 4)))
    return image


def _solid(h: int, w: int, colour) -> np.ndarray:
    return np.broadcast_to(np.asarray(colour, np.uint8), (h, w, 3)).copy()


def _ellipse(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return ((yy - (h - 1) / 2) / (h / 2)) ** 2 + ((xx - (w - 1) / 2) / (w / 2)) ** 2 <= 1.0


def _box(h: int, w: int) -> np.ndarray:
    return np.ones((h, w), bool)


def _line(start, velocity) -> Callable[[int], tuple[float, float]]:
    return lambda t: (start[0] + velocity[0] * t, start[1] + velocity[1] * t)


def _textured(rng, h: int, w: int) -> np.ndarray:
    return _texture(rng, h, w, rng.uniform(0, 255, 3)).astype(np.uint8)


# ------------------------------------------------------------------ the cases


def solid_squares(rng: np.random.Generator) -> Scene:
    """Two plain solid-coloured squares moving slowly over a busy background."""
    red, blue = _solid(48, 48, (230, 40, 40)), _solid(40, 40, (40, 80, 230))
    sprites = [Sprite(_box(48, 48), red, 1, _line((50, 40), (0.6, 1.2))),
               Sprite(_box(40, 40), blue, 2, _line((150, 230), (-0.8, -1.0)))]  # fmt: skip
    return Scene(_busy(rng, HEIGHT, WIDTH), sprites)


def textureless(rng: np.random.Generator) -> Scene:
    """A flat grey object on a flat background of a close grey."""
    grey = float(rng.uniform(90, 160))
    background = _solid(HEIGHT, WIDTH, (grey, grey, grey))
    object_grey = grey + 35
    sprites = [Sprite(_ellipse(70, 90), _solid(70, 90, (object_grey,) * 3), 1,
                      _line((80, 40), (0.5, 3.0)))]  # fmt: skip
    return Scene(background, sprites)


def logo(rng: np.random.Generator) -> Scene:
    """A logo (solid badge with lettering) moving over a textured background."""
    h, w = 50, 120
    look = _solid(h, w, (250, 200, 30))
    cv2.putText(look, "ISVOS", (8, 36), cv2.FONT_HERSHEY_SIMPLEX, 1.1, (20, 20, 120), 3)
    sprites = [Sprite(_box(h, w), look, 1, _line((40, 20), (2.0, 2.5)))]
    return Scene(_busy(rng, HEIGHT, WIDTH), sprites)


def camera_pan(rng: np.random.Generator) -> Scene:
    """A still scene seen by a panning camera: everything moves the same way."""
    canvas = _busy(rng, HEIGHT + 60, WIDTH + 160)
    sprites = [Sprite(_ellipse(60, 60), _textured(rng, 60, 60), 1, lambda t: (90, 150)),
               Sprite(_box(50, 70), _textured(rng, 50, 70), 2,
                      lambda t: (180, 300))]  # fmt: skip
    return Scene(
        canvas, sprites, window=lambda t: (60 * t / (FRAMES - 1), 160 * t / (FRAMES - 1), 1.0)
    )


def camera_zoom(rng: np.random.Generator) -> Scene:
    """A camera zooming in 1.0x -> 1.8x on an object."""
    canvas = _busy(rng, HEIGHT, WIDTH)
    sprites = [Sprite(_ellipse(60, 80), _textured(rng, 60, 80), 1, lambda t: (90, 120))]

    def window(t: int) -> tuple[float, float, float]:
        scale = 1.0 + 0.8 * t / (FRAMES - 1)
        h, w = HEIGHT / scale, WIDTH / scale
        return (120 - h / 2, 160 - w / 2, scale)  # centred on the object

    return Scene(canvas, sprites, window=window)


def occlusion(rng: np.random.Generator) -> Scene:
    """An object passes behind a pillar (hidden for several frames) and comes out."""
    pillar = Sprite(_box(HEIGHT, 70), _textured(rng, HEIGHT, 70), 0, lambda t: (0, 150))
    mover = Sprite(_ellipse(60, 50), _textured(rng, 60, 50), 1, _line((90, 30), (0, 6.0)))
    sprites = [mover, pillar]
    return Scene(_busy(rng, HEIGHT, WIDTH), sprites)


def leaves_frame(rng: np.random.Generator) -> Scene:
    """An object leaves through the right edge and comes back."""

    def path(t: int) -> tuple[float, float]:
        x = 180 + 9.0 * t if t < 20 else 180 + 9.0 * (39 - t)
        return (90, x)

    sprites = [Sprite(_ellipse(60, 60), _textured(rng, 60, 60), 1, path)]
    return Scene(_busy(rng, HEIGHT, WIDTH), sprites)


def small_object(rng: np.random.Generator) -> Scene:
    """A 12x12 object moving 2 px a frame."""
    sprites = [Sprite(_box(12, 12), _textured(rng, 12, 12), 1, _line((100, 60), (0.5, 2.0)))]
    return Scene(_busy(rng, HEIGHT, WIDTH), sprites)


def lookalikes(rng: np.random.Generator) -> Scene:
    """Two objects that look the same cross each other's path; both are tracked."""
    look = _textured(rng, 56, 56)
    shape = _ellipse(56, 56)
    sprites = [Sprite(shape, look, 1, _line((60, 30), (1.5, 5.5))),
               Sprite(shape, look.copy(), 2, _line((120, 240), (-1.5, -5.5)))]  # fmt: skip
    return Scene(_busy(rng, HEIGHT, WIDTH), sprites)


def _moving_pair(rng: np.random.Generator) -> Scene:
    first, second = _textured(rng, 60, 70), _textured(rng, 50, 50)
    sprites = [Sprite(_ellipse(60, 70), first, 1, _line((60, 40), (1.0, 2.5))),
               Sprite(_box(50, 50), second, 2, _line((150, 240), (-1.0, -2.0)))]  # fmt: skip
    return Scene(_busy(rng, HEIGHT, WIDTH), sprites)


def lighting(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness from 1.0 down to 0.45 and up to 1.3, with a colour cast drifting."""
    out = np.empty_like(frames)
    cast = rng.uniform(-25, 25, 3)
    for t, image in enumerate(frames):
        phase = t / (len(frames) - 1)
        gain = 1.0 - 1.1 * phase if phase < 0.5 else 0.45 + 1.7 * (phase - 0.5)
        out[t] = np.clip(image.astype(np.float32) * gain + cast * phase, 0, 255).astype(np.uint8)
    return out


def compression(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Every frame through JPEG at quality 8 (blocking, smeared colours)."""
    out = np.empty_like(frames)
    for t, image in enumerate(frames):
        ok, data = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 8])
        out[t] = cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1]
    return out


Case = Callable[..., tuple[np.ndarray, np.ndarray]]


def _case(scene: Callable[[np.random.Generator], Scene], effect=None) -> Case:
    def make(rng: np.random.Generator, flat: bool = False) -> tuple[np.ndarray, np.ndarray]:
        frames, labels = scene(rng).render(flat)
        if effect is not None and not flat:
            frames = effect(frames, rng)
        return frames, labels

    make.__doc__ = (effect or scene).__doc__
    return make


# name -> (the scene, a photometric effect on its frames)
SCENES: dict[str, tuple[Callable[[np.random.Generator], Scene], Callable | None]] = {
    "solid_squares": (solid_squares, None),
    "textureless": (textureless, None),
    "logo": (logo, None),
    "camera_pan": (camera_pan, None),
    "camera_zoom": (camera_zoom, None),
    "occlusion": (occlusion, None),
    "leaves_frame": (leaves_frame, None),
    "lighting": (_moving_pair, lighting),
    "compression": (_moving_pair, compression),
    "small_object": (small_object, None),
    "lookalikes": (lookalikes, None),
}
CASES: dict[str, Case] = {name: _case(*entry) for name, entry in SCENES.items()}


# ------------------------------------------------------------------ training clips

_LOOKS = ("solid", "flat", "textured", "badge")


def _random_look(rng: np.random.Generator, h: int, w: int, background: np.ndarray) -> np.ndarray:
    kind = _LOOKS[int(rng.integers(len(_LOOKS)))]
    if kind == "solid":
        return _solid(h, w, rng.integers(0, 256, 3))
    if kind == "flat":  # close to the background's mean: little contrast
        mean = background.reshape(-1, 3).mean(0)
        return _solid(h, w, np.clip(mean + rng.uniform(-45, 45, 3), 0, 255))
    if kind == "badge":
        look = _solid(h, w, rng.integers(0, 256, 3))
        text = "".join(chr(int(c)) for c in rng.integers(65, 91, int(rng.integers(2, 6))))
        ink = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.putText(look, text, (2, max(h // 2 + 6, 8)), cv2.FONT_HERSHEY_SIMPLEX,
                    max(h / 50, 0.3), ink, 2)  # fmt: skip
        return look
    return _textured(rng, h, w)


def training_clip(
    rng: np.random.Generator, num_frames: int = 3, size: int | tuple[int, int] = 192,
    max_objects: int = 3, max_skip: int = 5,
) -> tuple[np.ndarray, np.ndarray, int]:  # fmt: skip
    """A random procedural clip for training: ``num_frames`` frames of ``size`` (a side or
    (height, width); frames ``max_skip`` apart at most) of 1..``max_objects`` sprites (solid,
    flat, textured or lettered; some small; occluders and unlabelled look-alikes) moving,
    leaving and re-entering, seen by a camera that pans and zooms in or out from a random
    first view, with lighting and compression. Returns (frames, labels with ids 1..O all
    present in frame 0, O)."""
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    side = min(height, width)
    grow = rng.uniform(1.2, 1.6)
    canvas = np.array([int(height * grow), int(width * grow)])
    background = (_busy(rng, *canvas) if rng.random() < 0.7
                  else _solid(*canvas, rng.integers(0, 256, 3)))  # fmt: skip
    steps = [0]
    for _ in range(num_frames - 1):
        steps.append(steps[-1] + int(rng.integers(1, max_skip + 1)))
    sprites = []
    objects = int(rng.integers(1, max_objects + 1))
    for k in range(objects):
        extent = int(
            side * (rng.uniform(0.06, 0.12) if rng.random() < 0.2 else rng.uniform(0.15, 0.4))
        )
        h, w = max(extent, 6), max(int(extent * rng.uniform(0.6, 1.6)), 6)
        shape = _box(h, w) if rng.random() < 0.5 else _ellipse(h, w)
        look = _random_look(rng, h, w, background)
        start = rng.uniform(0.15, 0.65, 2) * canvas
        velocity = rng.uniform(-4, 4, 2) * (3 if rng.random() < 0.2 else 1)
        sprites.append(Sprite(shape, look, k + 1, _line(start, velocity)))
        if rng.random() < 0.2:  # an unlabelled look-alike
            other = rng.uniform(0.1, 0.7, 2) * canvas
            sprites.append(Sprite(shape, look.copy(), 0, _line(other, rng.uniform(-4, 4, 2))))
    if rng.random() < 0.3:  # an occluder in front
        oh, ow = int(canvas[0] * rng.uniform(0.2, 1.0)), int(canvas[1] * rng.uniform(0.08, 0.25))
        at = rng.uniform(0, 0.8, 2) * canvas
        sprites.append(Sprite(_box(oh, ow), _random_look(rng, oh, ow, background), 0,
                              _line(at, rng.uniform(-2, 2, 2))))  # fmt: skip
    whole = max(height / canvas[0], width / canvas[1])  # the scale that shows all the canvas
    first_scale = whole * rng.uniform(1.0, 1.5)
    zoom = rng.uniform(-0.015, 0.015)
    pan = rng.uniform(-3, 3, 2)
    first_view = np.array([height, width]) / first_scale
    first_centre = rng.uniform(first_view / 2, canvas - first_view / 2)

    def window(t: int) -> tuple[float, float, float]:
        scale = float(np.clip(first_scale * (1 + zoom * t), whole, 2.0))
        view = np.array([height, width]) / scale
        y, x = np.clip(first_centre + pan * t - view / 2, 0, np.maximum(canvas - view, 0))
        return float(y), float(x), scale

    scene = Scene(background, sprites, window, frames=steps[-1] + 1, size=(height, width))
    frames, labels = scene.render(times=steps)  # only the frames the clip keeps
    if rng.random() < 0.3:
        frames = lighting(frames, rng) if len(frames) > 1 else frames
    if rng.random() < 0.2:
        frames = compression(frames, rng)
    present = [k for k in range(1, objects + 1) if (labels[0] == k).any()]
    lookup = np.zeros(256, np.uint8)
    lookup[present] = np.arange(1, len(present) + 1)
    return frames, lookup[labels], len(present)
