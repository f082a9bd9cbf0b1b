"""Mask inputs (indexed/binary PNG, folders, RLE), validation errors and writers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from service.media.errors import MediaError
from service.media.limits import MediaLimits
from service.media.masks import (
    DAVIS_PALETTE,
    PALETTE_RGB,
    encode_rle,
    load_mask_input,
    read_binary_masks,
    read_coco_rle,
    read_indexed_png,
    write_indexed_png,
    write_rle_json,
)

pytestmark = pytest.mark.timeout(60)

H, W = 48, 64


def labels_2obj(shift: int = 0) -> np.ndarray:
    lab = np.zeros((H, W), np.uint8)
    lab[5:20, 5 + shift : 25 + shift] = 1
    lab[25:40, 30:60] = 2
    return lab


def _binary(path: Path, mask: np.ndarray, mode: str = "L") -> Path:
    img = Image.fromarray((mask > 0).astype(np.uint8) * 255)
    img.convert(mode).save(path)
    return path


def _code(exc: pytest.ExceptionInfo[MediaError]) -> str:
    return exc.value.code


def test_palette() -> None:
    assert len(DAVIS_PALETTE) == 768
    assert [tuple(PALETTE_RGB[i]) for i in range(5)] == [
        (0, 0, 0),
        (128, 0, 0),
        (0, 128, 0),
        (128, 128, 0),
        (0, 0, 128),
    ]
    assert tuple(PALETTE_RGB[255]) == (224, 224, 192)


def test_indexed_png_round_trip(tmp_path: Path) -> None:
    lab = labels_2obj()
    write_indexed_png(tmp_path / "m.png", lab)
    im = Image.open(tmp_path / "m.png")
    assert im.mode == "P" and im.getpalette()[:9] == [0, 0, 0, 128, 0, 0, 0, 128, 0]
    assert np.array_equal(read_indexed_png(tmp_path / "m.png"), lab)
    got = load_mask_input(tmp_path / "m.png", (H, W))
    assert list(got) == [0] and np.array_equal(got[0], lab)


def test_grayscale_and_davis_rgb_png(tmp_path: Path) -> None:
    lab = labels_2obj()
    lab[0, 0] = 7
    Image.fromarray(lab, mode="L").save(tmp_path / "grey.png")
    assert np.array_equal(read_indexed_png(tmp_path / "grey.png"), lab)
    Image.fromarray(PALETTE_RGB[lab]).save(tmp_path / "rgb.png")
    assert np.array_equal(read_indexed_png(tmp_path / "rgb.png"), lab)


def test_rgb_png_outside_palette_refused(tmp_path: Path) -> None:
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[10:20, 10:20] = (255, 10, 10)
    Image.fromarray(rgb).save(tmp_path / "red.png")
    with pytest.raises(MediaError, match="DAVIS palette") as e:
        read_indexed_png(tmp_path / "red.png")
    assert _code(e) == "mask_unreadable" and "red.png" in str(e.value)


def test_binary_masks_files_and_overlap(tmp_path: Path) -> None:
    a = np.zeros((H, W), bool)
    a[10:30, 10:30] = True
    b = np.zeros((H, W), bool)
    b[20:40, 20:40] = True
    pa = _binary(tmp_path / "a.png", a)
    pb = _binary(tmp_path / "b.png", b, mode="RGB")
    lab = read_binary_masks([pa, pb])
    assert lab[15, 15] == 1 and lab[35, 35] == 2 and lab[25, 25] == 2  # later wins
    assert np.array_equal(read_binary_masks([pa, pb], ids=[5, 3])[lab > 0] > 0, lab[lab > 0] > 0)
    got = load_mask_input([pa, pb], (H, W))
    assert np.array_equal(got[0], lab)
    with pytest.raises(MediaError) as e:
        read_binary_masks([pa, pb], ids=[1, 1])
    assert _code(e) == "bad_object_id"


def test_folder_of_binary_masks(tmp_path: Path) -> None:
    folder = tmp_path / "objs"
    folder.mkdir()
    lab = labels_2obj()
    _binary(folder / "car.png", lab == 1)
    _binary(folder / "dog.png", lab == 2)
    got = load_mask_input(folder, (H, W))
    assert list(got) == [0] and np.array_equal(got[0], lab)


def test_folder_of_indexed_frames(tmp_path: Path) -> None:
    folder = tmp_path / "Annotations"
    folder.mkdir()
    write_indexed_png(folder / "00000.png", labels_2obj())
    write_indexed_png(folder / "00012.png", labels_2obj(shift=3))
    got = load_mask_input(folder, (H, W))
    assert sorted(got) == [0, 12]
    assert np.array_equal(got[12], labels_2obj(shift=3))
    with pytest.raises(MediaError) as e:
        load_mask_input(folder, (H, W), num_frames=10)
    assert _code(e) == "frame_range"


def test_rle_list_input(tmp_path: Path) -> None:
    lab = labels_2obj()
    entries = encode_rle(lab, [1, 2])
    entries[1]["frame"] = 4
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps(entries))
    got = load_mask_input(path, (H, W))
    assert sorted(got) == [0, 4]
    assert np.array_equal(got[0], np.where(lab == 1, 1, 0))
    assert np.array_equal(got[4], np.where(lab == 2, 2, 0))
    # Uncompressed RLE (list counts: alternating 0/1 run lengths, column-major) works too.
    flat = (lab == 2).T.ravel().astype(np.int8)
    counts = np.diff(np.flatnonzero(np.diff(np.r_[-1, flat, -1]))).tolist()  # flat[0] == 0
    obj = [{"id": 9, "segmentation": {"size": [H, W], "counts": counts}}]
    assert np.array_equal(read_coco_rle(obj)[0], np.where(lab == 2, 9, 0))


def test_rle_round_trip_streamed(tmp_path: Path) -> None:
    frames = [(i, labels_2obj(shift=i)) for i in range(5)]
    frames[2][1][frames[2][1] == 2] = 0  # object 2 absent in frame 2
    consumed: list[int] = []

    def gen():  # a generator: the writer must not need a list
        for fi, lab in frames:
            consumed.append(fi)
            yield fi, lab

    out = tmp_path / "masks.json"
    write_rle_json(out, gen(), [1, 2])
    doc = json.loads(out.read_text())
    assert doc["format"] == "coco_rle" and (doc["height"], doc["width"]) == (H, W)
    assert doc["objects"] == [1, 2] and [f["frame"] for f in doc["frames"]] == list(range(5))
    for (_, lab), rec in zip(frames, doc["frames"], strict=True):
        for o in rec["objects"]:
            seg = o["segmentation"]
            assert isinstance(seg["counts"], str) and seg["size"] == [H, W]
            decoded = mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode()})
            assert np.array_equal(decoded > 0, lab == o["id"])
    back = read_coco_rle(out)
    assert all(np.array_equal(back[fi], lab) for fi, lab in frames)
    # As input: frames are prompts; the absent object 2 on frame 2 is not an error.
    assert sorted(load_mask_input(out, (H, W))) == list(range(5))
    assert not list(tmp_path.glob("*.part"))


def test_write_rle_json_empty_needs_size(tmp_path: Path) -> None:
    write_rle_json(tmp_path / "e.json", [], [1], size=(H, W))
    assert json.loads((tmp_path / "e.json").read_text())["frames"] == []
    with pytest.raises(ValueError):
        write_rle_json(tmp_path / "f.json", [], [1])


def test_size_mismatch_and_resize(tmp_path: Path) -> None:
    small = np.zeros((H // 2, W // 2), np.uint8)
    small[2:10, 2:10] = 1
    small[12:20, 20:30] = 3
    write_indexed_png(tmp_path / "small.png", small)
    with pytest.raises(MediaError, match="resize") as e:
        load_mask_input(tmp_path / "small.png", (H, W))
    assert _code(e) == "mask_size_mismatch" and "32x24" in str(e.value)
    got = load_mask_input(tmp_path / "small.png", (H, W), resize_masks=True)[0]
    assert got.shape == (H, W) and set(np.unique(got)) == {0, 1, 3}  # nearest: no new ids
    with pytest.raises(MediaError, match="aspect ratio") as e:
        load_mask_input(tmp_path / "small.png", (H, W * 2), resize_masks=True)
    assert _code(e) == "mask_size_mismatch"
    with pytest.raises(MediaError, match="rotated"):
        load_mask_input(tmp_path / "small.png", (W // 2, H // 2))


def test_empty_masks(tmp_path: Path) -> None:
    write_indexed_png(tmp_path / "zero.png", np.zeros((H, W), np.uint8))
    with pytest.raises(MediaError, match="zero.png") as e:
        load_mask_input(tmp_path / "zero.png", (H, W))
    assert _code(e) == "mask_empty"
    full = _binary(tmp_path / "full.png", labels_2obj() == 1)
    empty = _binary(tmp_path / "nothing.png", np.zeros((H, W), bool))
    with pytest.raises(MediaError, match=r"nothing\.png.*object 2") as e:
        load_mask_input([full, empty], (H, W))
    assert _code(e) == "mask_empty"
    entries = encode_rle(labels_2obj(), [1, 7])  # object 7 is absent: empty RLE
    (tmp_path / "e.json").write_text(json.dumps(entries))
    with pytest.raises(MediaError, match="object 7") as e:
        load_mask_input(tmp_path / "e.json", (H, W))
    assert _code(e) == "mask_empty"


def test_too_many_objects(tmp_path: Path) -> None:
    lab = labels_2obj()
    lab[0:3, 0:3] = 3
    write_indexed_png(tmp_path / "three.png", lab)
    with pytest.raises(MediaError) as e:
        load_mask_input(tmp_path / "three.png", (H, W), MediaLimits(max_objects=2))
    assert _code(e) == "too_many_objects" and "3 objects" in str(e.value)
    paths = [_binary(tmp_path / f"{i}.png", lab > 0) for i in range(3)]
    with pytest.raises(MediaError) as e:
        load_mask_input(paths, (H, W), MediaLimits(max_objects=2))
    assert _code(e) == "too_many_objects"


def test_bad_inputs(tmp_path: Path) -> None:
    for name in ("mask.jpg", "mask.txt", "mask"):
        (tmp_path / name).write_bytes(b"x")
        with pytest.raises(MediaError) as e:
            load_mask_input(tmp_path / name, (H, W))
        assert _code(e) == "unknown_format"
    with pytest.raises(MediaError) as e:
        load_mask_input(tmp_path / "missing.png", (H, W))
    assert _code(e) == "mask_unreadable"
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "poly.json").write_text(json.dumps([{"id": 1, "segmentation": [[1, 2, 3]]}]))
    (tmp_path / "id0.json").write_text(json.dumps([{**encode_rle(labels_2obj(), [1])[0], "id": 0}]))
    seg = {"size": [H, W], "counts": encode_rle(labels_2obj(), [1])[0]["segmentation"]["counts"]}
    (tmp_path / "cut.json").write_text(
        json.dumps([{"id": 1, "segmentation": {**seg, "counts": seg["counts"][:-3]}}])
    )
    (tmp_path / "neg.json").write_text(
        json.dumps([{"id": 1, "segmentation": {**seg, "counts": [5, -3]}}])
    )
    for name, code in [
        ("cut.json", "mask_unreadable"),
        ("neg.json", "mask_unreadable"),
        ("broken.png", "mask_unreadable"),
        ("bad.json", "mask_unreadable"),
        ("poly.json", "mask_unreadable"),
        ("id0.json", "bad_object_id"),
    ]:
        with pytest.raises(MediaError) as e:
            load_mask_input(tmp_path / name, (H, W))
        assert _code(e) == code, name
        assert name in str(e.value)
    with pytest.raises(MediaError) as e:
        load_mask_input(tmp_path / "folder_missing", (H, W))
    assert _code(e) == "mask_unreadable"


def _rle_entries(count: int, *, frames: int = 1, ids: int | None = None) -> list[dict]:
    mask = np.zeros((1080, 1920), np.uint8)
    mask[:10, :10] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    rle["counts"] = rle["counts"].decode()
    return [
        {"frame": k % frames, "id": k % (ids or count) + 1, "segmentation": rle}
        for k in range(count)
    ]


@pytest.mark.parametrize(
    ("entries", "limits", "code", "message"),
    [
        (_rle_entries(2000, ids=10), MediaLimits(max_rle_entries=1000), "too_many_objects",
         "2000 RLE entries"),
        (_rle_entries(2000), MediaLimits(), "too_many_objects", "2000 objects"),
        (_rle_entries(20, ids=2), MediaLimits(max_objects=1), "too_many_objects", "2 objects"),
        (_rle_entries(100, frames=100, ids=1), MediaLimits(), "frame_range", "100 frames"),
    ],
)  # fmt: skip
def test_rle_prompts_are_counted_before_any_mask_is_decoded(
    tmp_path, entries, limits, code, message
):
    """2,000 full-HD entries would decode to 4 GB of masks: refused from the counts."""
    import tracemalloc

    path = tmp_path / "prompts.json"
    path.write_text(json.dumps(entries))
    tracemalloc.start()
    try:
        with pytest.raises(MediaError) as error:
            load_mask_input(path, (1080, 1920), limits, num_frames=1000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert error.value.code == code and message in str(error.value)
    assert peak < 64 * 2**20, peak  # the JSON, not the masks


def test_a_session_limit_on_objects_is_checked_before_masks_are_built():
    from isvos.errors import IsvosError
    from service.runner import prompt_masks

    labels = np.arange(200, dtype=np.uint8).reshape(10, 20) % 40
    with pytest.raises(IsvosError, match="39 objects") as error:
        prompt_masks(labels, (10, 20), 0, max_objects=16)
    assert error.value.code == "too_many_objects"
    assert len(prompt_masks(labels, (10, 20), 0, max_objects=39)) == 39
