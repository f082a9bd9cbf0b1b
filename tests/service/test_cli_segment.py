"""`isvos segment`, end to end on a real H.264 file with the tiny checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from service.cli import app
from tests.conftest import TINY_CHECKPOINT, iou

pytestmark = pytest.mark.timeout(180)
runner = CliRunner()
TINY = ["--config", "tiny", "--checkpoint", str(TINY_CHECKPOINT), "--threads", "2"]


def segment(*args: str):
    return runner.invoke(app, ["segment", *map(str, args), *TINY])


def read_masks(folder: Path) -> list[np.ndarray]:
    return [np.array(Image.open(p)) for p in sorted((folder / "masks").glob("*.png"))]


def test_segment_writes_indexed_pngs_rle_and_overlay(clip_video, tmp_path):
    video, labels, first = clip_video
    out = tmp_path / "out"
    result = segment(video, "--masks", first, "--out", out, "--rle", "--overlay", "--size", "96")
    assert result.exit_code == 0, result.output
    masks = read_masks(out)
    assert len(masks) == 20
    assert all(m.shape == labels[0].shape and set(np.unique(m)) <= {0, 1, 2} for m in masks)
    assert Image.open(out / "masks" / "00000.png").mode == "P"
    assert np.mean([iou(m == 1, g == 1) for m, g in zip(masks, labels, strict=True)]) > 0.5
    from pycocotools import mask as mask_utils

    document = json.loads((out / "masks.json").read_text())
    assert document["objects"] == [1, 2] and len(document["frames"]) == 20
    for entry, png in zip(document["frames"], masks, strict=True):
        for obj in entry["objects"]:
            decoded = mask_utils.decode(obj["segmentation"]).astype(bool)
            assert np.array_equal(decoded, png == obj["id"])
    with av.open(str(out / "overlay.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert sum(1 for _ in container.decode(stream)) == 20
    assert (out / "preview.png").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 20 and len(summary["timestamps_s"]) == 20


def test_binary_masks_rle_input_frame_range_and_late_objects(clip_video, tmp_path):
    video, labels, _ = clip_video
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.fromarray(((labels[0] == 1) * 255).astype(np.uint8)).save(a)
    Image.fromarray(((labels[0] == 2) * 255).astype(np.uint8)).save(b)
    out = tmp_path / "binary"
    result = segment(video, "--masks", a, "--masks", b, "--out", out, "--end", "6")
    assert result.exit_code == 0, result.output
    assert len(read_masks(out)) == 6
    # COCO RLE for frame 4 only: frames 0-3 get empty masks, object appears at 4.
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray((labels[4] == 1).astype(np.uint8)))
    rle["counts"] = rle["counts"].decode()
    spec = tmp_path / "late.json"
    spec.write_text(json.dumps([{"id": 7, "frame": 4, "segmentation": rle}]))
    out = tmp_path / "late"
    result = segment(video, "--masks", spec, "--out", out, "--end", "10", "--stride", "2")
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (out / "masks").glob("*.png"))
    assert names == ["00000.png", "00002.png", "00004.png", "00006.png", "00008.png"]
    masks = read_masks(out)
    assert not masks[0].any() and not masks[1].any()
    assert set(np.unique(masks[2])) == {0, 7}


def test_odd_sized_frame_folder(clip, tmp_path):
    frames, labels = clip
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(6):
        Image.fromarray(frames[i][:95, :157]).save(folder / f"{i:05d}.jpg")
    first = tmp_path / "first.png"
    from service.media.masks import write_indexed_png

    write_indexed_png(first, labels[0][:95, :157])
    out = tmp_path / "out"
    result = segment(folder, "--masks", first, "--out", out)
    assert result.exit_code == 0, result.output
    assert [m.shape for m in read_masks(out)] == [(95, 157)] * 6


def test_a_preset_sets_the_processing_size_unless_it_is_given(clip_video, tmp_path):
    from isvos.presets import PRESETS

    video, _, first = clip_video
    sizes = {}
    for name, extra in (("accurate", []), ("given", ["--size", "64"])):
        out = tmp_path / name
        result = segment(video, "--masks", first, "--out", out, "--preset", "accurate",
                         "--end", "3", *extra)  # fmt: skip
        assert result.exit_code == 0, result.output
        sizes[name] = min(json.loads((out / "summary.json").read_text())["processing_size"])
    assert sizes == {"accurate": PRESETS["accurate"].short_side(96), "given": 64}


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("size_mismatch", "mask_size_mismatch"),
        ("empty_mask", "mask_empty"),
        ("too_many_objects", "over the session limit of 16"),
        ("unreadable_video", "video_unreadable"),
        ("range", "frame_range"),
        ("unknown_format", "unknown_format"),
        ("over_limit", "too_many_frames"),
        ("missing_video", "does not exist"),
        ("zero_stride", "frame_range"),
        ("tiny_size", "invalid_size"),
        ("huge_size", "resource_exhausted"),
        ("off_stride_masks", "skips"),
        ("unknown_preset", "unknown preset 'best'"),
    ],
)
def test_bad_input_gives_a_clear_error(clip_video, tmp_path, case, message):
    from service.media.masks import write_indexed_png

    video, labels, first = clip_video
    masks = first
    extra: list[str] = []
    if case == "size_mismatch":
        masks = tmp_path / "small.png"
        write_indexed_png(masks, labels[0][:50, :50])
    elif case == "empty_mask":
        masks = tmp_path / "empty.png"
        write_indexed_png(masks, np.zeros_like(labels[0]))
    elif case == "too_many_objects":
        many = np.zeros_like(labels[0])
        for i in range(20):
            many[i * 4 : i * 4 + 3, :20] = i + 1
        masks = tmp_path / "many.png"
        write_indexed_png(masks, many)
    elif case == "unreadable_video":
        broken = tmp_path / "broken.mp4"
        data = Path(video).read_bytes()
        broken.write_bytes(data[: len(data) // 3])
        video = broken
    elif case == "range":
        extra = ["--start", "500"]
    elif case == "unknown_format":
        masks = tmp_path / "mask.bmp"
        masks.write_bytes(b"BM")
    elif case == "over_limit":
        extra = ["--max-frames", "5"]
    elif case == "missing_video":
        video = tmp_path / "nope.mp4"
    elif case == "zero_stride":
        extra = ["--stride", "0"]
    elif case == "tiny_size":
        extra = ["--size", "16"]
    elif case == "huge_size":
        extra = ["--size", "4000"]
    elif case == "unknown_preset":
        extra = ["--preset", "best"]
    elif case == "off_stride_masks":
        from pycocotools import mask as mask_utils

        rle = mask_utils.encode(np.asfortranarray((labels[3] == 1).astype(np.uint8)))
        rle["counts"] = rle["counts"].decode()
        masks = tmp_path / "late.json"
        masks.write_text(json.dumps([{"id": 1, "frame": 3, "segmentation": rle}]))
        extra = ["--stride", "2"]
    result = segment(video, "--masks", masks, "--out", tmp_path / "out", *extra)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
