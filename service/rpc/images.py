"""Frames and masks of ``Track`` messages to arrays, with their sizes checked before any
pixel is decoded (JPEG/PNG headers, raw byte counts). Torch-free."""

from __future__ import annotations

import io
import json

import cv2
import numpy as np
from PIL import Image as PILImage

from isvos.errors import IsvosError
from service.media.limits import MediaLimits
from service.media.masks import read_indexed_png
from service.media.rle import parse_rle, read_coco_rle
from service.rpc.gen import segmentation_pb2 as pb


def _check_size(width: int, height: int, limits: MediaLimits) -> None:
    if width <= 0 or height <= 0:
        raise IsvosError("invalid_argument", f"the frame size {width}x{height} is not valid")
    if width > limits.max_width or height > limits.max_height:
        raise IsvosError(
            "dimensions_too_large",
            f"the frame is {width}x{height}, over the limit of {limits.max_width}x"
            f"{limits.max_height}",
        )


def decode_image(image: pb.Image, limits: MediaLimits) -> np.ndarray:
    """RGB uint8 [h, w, 3] from an ``Image`` message."""
    kind = image.WhichOneof("data")
    if kind is None:
        raise IsvosError("invalid_argument", "the frame has no image (jpeg, png, rgb or i420)")
    if kind in ("rgb", "i420"):
        w, h = image.width, image.height
        _check_size(w, h, limits)
        data = getattr(image, kind)
        if kind == "rgb":
            if len(data) != w * h * 3:
                raise IsvosError(
                    "invalid_argument",
                    f"raw RGB of {w}x{h} is {w * h * 3} bytes, got {len(data)}",
                )
            return np.frombuffer(data, np.uint8).reshape(h, w, 3).copy()
        if w % 2 or h % 2:
            raise IsvosError("invalid_argument", f"I420 needs even sizes, got {w}x{h}")
        if len(data) != w * h * 3 // 2:
            raise IsvosError(
                "invalid_argument",
                f"raw I420 of {w}x{h} is {w * h * 3 // 2} bytes, got {len(data)}",
            )
        yuv = np.frombuffer(data, np.uint8).reshape(h * 3 // 2, w)
        return cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB_I420)
    data = getattr(image, kind)
    try:
        with PILImage.open(io.BytesIO(data)) as im:
            _check_size(im.width, im.height, limits)  # from the header, before decoding
            declared = (image.width, image.height)
            if all(declared) and (im.width, im.height) != declared:
                raise IsvosError(
                    "invalid_argument",
                    f"the {kind} is {im.width}x{im.height}, the message says "
                    f"{image.width}x{image.height}",
                )
            rgb = np.asarray(im.convert("RGB"))
    except (OSError, ValueError, PILImage.DecompressionBombError) as exc:
        if isinstance(exc, IsvosError):
            raise
        raise IsvosError("invalid_argument", f"the {kind} image cannot be decoded: {exc}") from exc
    return np.ascontiguousarray(rgb)


def decode_masks(masks: pb.Masks, size: tuple[int, int], limits: MediaLimits) -> np.ndarray:
    """A label map at the frame's ``size`` (h, w) from a ``Masks`` message."""
    kind = masks.WhichOneof("data")
    if kind == "indexed_png":
        return read_indexed_png(masks.indexed_png, size)
    if kind == "coco_rle_json":
        try:
            document = json.loads(masks.coco_rle_json)
        except ValueError as exc:
            raise IsvosError("mask_unreadable", f"coco_rle_json is not JSON: {exc}") from exc
        parsed = parse_rle(document, limits, prompts=True)
        if parsed.size is not None and tuple(parsed.size) != tuple(size):
            raise IsvosError(
                "mask_size_mismatch",
                f"the masks are {parsed.size[1]}x{parsed.size[0]}, the frame {size[1]}x{size[0]}",
            )
        maps = read_coco_rle(parsed)
        if list(maps) not in ([0], []):
            raise IsvosError("invalid_argument", "masks of a frame carry no frame indices")
        if not maps:
            raise IsvosError("mask_empty", "coco_rle_json holds no masks")
        return maps[0]
    raise IsvosError("invalid_argument", "masks need indexed_png or coco_rle_json")
