"""Synthetic clips of moving textured shapes (torch-free), for tests and the tiny model.

Each object has its own colour texture and moves on a straight line over a textured
background, so tracking it needs appearance matching: a broken memory read loses it.
"""

from __future__ import annotations

import cv2
import numpy as np


def _texture(rng: np.random.Generator, height: int, width: int, base: np.ndarray) -> np.ndarray:
    noise = rng.normal(0.0, 1.0, (max(height // 8, 2), max(width // 8, 2), 3)).astype(np.float32)
    noise = cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(base[None, None, :] + 28.0 * noise, 0, 255)


def synthetic_clip(
    rng: np.random.Generator,
    *,
    num_frames: int = 8,
    height: int = 96,
    width: int = 160,
    num_objects: int = 2,
    max_speed: float = 3.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Returns frames [T, H, W, 3] uint8 and labels [T, H, W] uint8 (ids 1..num_objects)."""
    background = _texture(rng, height, width, rng.uniform(40, 215, 3))
    objects = []
    for _ in range(num_objects):
        radius_y = rng.uniform(0.12, 0.25) * height
        radius_x = rng.uniform(0.08, 0.18) * width
        centre = np.array([rng.uniform(0.25, 0.75) * height, rng.uniform(0.2, 0.8) * width])
        velocity = rng.uniform(-max_speed, max_speed, 2)
        texture = _texture(rng, height, width, rng.uniform(0, 255, 3))
        objects.append((radius_y, radius_x, centre, velocity, texture))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    labels = np.zeros((num_frames, height, width), np.uint8)
    for t in range(num_frames):
        image = background.copy()
        label = np.zeros((height, width), np.uint8)
        for object_id, (ry, rx, centre, velocity, texture) in enumerate(objects, start=1):
            cy, cx = centre + velocity * t
            inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
            image[inside] = texture[inside]
            label[inside] = object_id
        frames[t] = image.astype(np.uint8)
        labels[t] = label
    return frames, labels
