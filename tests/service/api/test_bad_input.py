"""A corpus of bad requests through the real HTTP API: each answered with the right 4xx and
code of the error table, nothing left on disk, and the server serving the next request."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from service.media.masks import write_indexed_png
from tests.helpers.stack import GatewayServer, make_settings, submit
from tests.service.conftest import write_video

pytestmark = pytest.mark.timeout(120)
LIMIT_BYTES = 300_000


@pytest.fixture(scope="module")
def gateway(redis_server, tmp_path_factory):
    """No workers: accepted jobs stay queued (results are not ready)."""
    settings = make_settings(
        redis_server.url, tmp_path_factory.mktemp("bad"),
        limits={"max_upload_bytes": LIMIT_BYTES, "max_frames": 100, "max_width": 640,
                "max_mask_bytes": 100_000, "max_short_side": 480, "max_queued_jobs": 100},
    )  # fmt: skip
    server = GatewayServer(settings)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def media(tmp_path_factory, example_clip):
    folder = tmp_path_factory.mktemp("media")
    video, first = example_clip
    labels = np.array(__import__("PIL.Image", fromlist=["Image"]).open(first))
    files: dict[str, Path] = {"video": video, "first": first}
    (folder / "empty.mp4").write_bytes(b"")
    files["empty"] = folder / "empty.mp4"
    data = video.read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 4])
    files["truncated"] = folder / "truncated.mp4"
    (folder / "text.mp4").write_text("this is not a video\n" * 50)
    files["text"] = folder / "text.mp4"
    files["still"] = folder / "still.mp4"
    files["still"].write_bytes(first.read_bytes())
    files["audio"] = _audio_only(folder / "audio.mp4")
    rng = np.random.default_rng(0)
    long = rng.integers(0, 255, (120, 32, 32, 3), dtype=np.uint8)
    files["long"] = write_video(folder / "long.mp4", long)
    wide = rng.integers(0, 255, (3, 32, 704, 3), dtype=np.uint8)
    files["wide"] = write_video(folder / "wide.mp4", wide)
    files["huge"] = folder / "huge.mp4"
    files["huge"].write_bytes(rng.integers(0, 255, LIMIT_BYTES + 50_000, dtype=np.uint8).tobytes())
    small = folder / "small.png"
    write_indexed_png(small, labels[:100, :100])
    files["small_mask"] = small
    blank = folder / "blank.png"
    write_indexed_png(blank, np.zeros_like(labels))
    files["blank_mask"] = blank
    many = np.zeros_like(labels)
    for i in range(20):
        many[i * 10 : i * 10 + 5, :40] = i + 1
    files["many_mask"] = folder / "many.png"
    write_indexed_png(files["many_mask"], many)
    rle = mask_utils.encode(np.asfortranarray((labels == 1).astype(np.uint8)))
    rle["counts"] = rle["counts"].decode()
    for name, entries in {
        "id0": [{"id": 0, "frame": 0, "segmentation": rle}],
        "id300": [{"id": 300, "frame": 0, "segmentation": rle}],
        "bad_rle": [{"id": 1, "frame": 0, "segmentation": {"size": [240, 320], "counts": "!!"}}],
        "late_rle": [{"id": 1, "frame": 500, "segmentation": rle}],
        "odd_frame": [{"id": 1, "frame": 3, "segmentation": rle}],
    }.items():
        files[name] = folder / f"{name}.json"
        files[name].write_text(json.dumps(entries))
    files["not_json"] = folder / "notjson.json"
    files["not_json"].write_text("{not json")
    files["bmp"] = folder / "mask.bmp"
    files["bmp"].write_bytes(b"BM" + bytes(100))
    files["big_mask"] = folder / "big.json"
    files["big_mask"].write_text(" " * 150_000 + "[]")
    return files


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=22050)
        frame_size = stream.codec_context.frame_size or 1024
        for i in range(20):
            samples = np.zeros((1, frame_size), np.float32)
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 22050, i * frame_size
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


# (case, video, masks, options, status, code)
CASES = [
    ("zero-byte video", "empty", ["first"], {}, 422, "video_unreadable"),
    ("truncated mp4", "truncated", ["first"], {}, 422, "video_unreadable"),
    ("text named .mp4", "text", ["first"], {}, 422, "video_unreadable"),
    ("a still image", "still", ["first"], {}, 415, "unknown_format"),
    ("audio only", "audio", ["first"], {}, 422, "video_unreadable"),
    ("too many frames", "long", ["first"], {}, 422, "too_many_frames"),
    ("too wide", "wide", ["first"], {}, 422, "dimensions_too_large"),
    ("upload over the limit", "huge", ["first"], {}, 413, "video_too_large"),
    ("masks of the wrong size", "video", ["small_mask"], {}, 422, "mask_size_mismatch"),
    ("a mask with no object", "video", ["blank_mask"], {}, 422, "mask_empty"),
    ("object id 0", "video", ["id0"], {}, 422, "bad_object_id"),
    ("object id over 255", "video", ["id300"], {}, 422, "bad_object_id"),
    ("too many objects", "video", ["many_mask"], {}, 422, "too_many_objects"),
    ("malformed RLE", "video", ["bad_rle"], {}, 422, "mask_unreadable"),
    ("RLE that is not JSON", "video", ["not_json"], {}, 422, "mask_unreadable"),
    ("masks past the video", "video", ["late_rle"], {}, 422, "frame_range"),
    ("masks on a skipped frame", "video", ["odd_frame"], {"stride": 2}, 422, "frame_range"),
    ("mask of an unknown type", "video", ["bmp"], {}, 415, "unknown_format"),
    ("mask file over its limit", "video", ["big_mask"], {}, 413, "payload_too_large"),
    ("unknown option", "video", ["first"], {"colour": "red"}, 400, "invalid_argument"),
    ("option of a wrong type", "video", ["first"], {"size": "big"}, 400, "invalid_argument"),
    ("size below 32", "video", ["first"], {"size": 8}, 400, "invalid_argument"),
    ("size over the limit", "video", ["first"], {"size": 2000}, 400, "invalid_size"),
    ("another config", "video", ["first"], {"config": "paper-r50"}, 400, "invalid_argument"),
    ("start past the end", "video", ["first"], {"start": 500}, 422, "frame_range"),
    ("end before start", "video", ["first"], {"start": 5, "end": 3}, 400, "invalid_argument"),
    ("zero stride", "video", ["first"], {"stride": 0}, 400, "invalid_argument"),
    ("an unknown output", "video", ["first"], {"outputs": ["gif"]}, 400, "invalid_argument"),
    ("bad memory options", "video", ["first"], {"memory": {"top_k": 0}}, 400,
     "invalid_argument"),
    ("no masks", "video", [], {}, 400, "invalid_argument"),
    ("an unknown preset", "video", ["first"], {"preset": "best"}, 400, "invalid_argument"),
]  # fmt: skip


def _assert_refused(response, status, code):
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code, body
    assert body["message"] and "Traceback" not in response.text


def _no_job_files(gateway) -> bool:
    jobs = gateway.settings.storage.data_dir / "blobs" / "jobs"
    return not jobs.exists() or not any(jobs.iterdir())


@pytest.mark.parametrize(("case", "video", "masks", "options", "status", "code"), CASES,
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_bad_submits(gateway, media, case, video, masks, options, status, code):
    with gateway.client() as http:
        response = submit(http, media[video], [media[m] for m in masks], options)
        _assert_refused(response, status, code)
        assert _no_job_files(gateway), f"{case}: files left behind"
        assert http.get("/healthz").status_code == 200


def _raw(gateway, **kwargs):
    with gateway.client() as http:
        return http.post("/v1/jobs", **kwargs)


def test_bad_bodies(gateway, media):
    video = ("video", ("v.mp4", media["video"].read_bytes()))
    mask = ("masks", ("m.png", media["first"].read_bytes()))
    cases = [
        ("not multipart", {"json": {"video": "x"}}, 400, "invalid_argument"),
        ("malformed options JSON", {"files": [video, mask], "data": {"options": "{nope"}},
         400, "invalid_argument"),
        ("no video", {"files": [mask]}, 400, "invalid_argument"),
        ("two videos", {"files": [video, video, mask]}, 400, "invalid_argument"),
        ("an unknown field", {"files": [video, mask], "data": {"colour": "red"}},
         400, "invalid_argument"),
        ("an unknown file", {"files": [video, mask, ("extra", ("x.bin", b"x"))]},
         400, "invalid_argument"),
        ("an unknown upload", {"files": [mask], "data": {"upload_id": "0" * 32}},
         404, "not_found"),
        ("a hostile upload id", {"files": [mask], "data": {"upload_id": "../../etc/passwd"}},
         404, "not_found"),
        ("a part header of 20 KiB (the parser's own limit)",
         {"content": b"--xyz\r\nContent-Disposition: form-data; name=\"options\"\r\nX-Pad: "
                     + b"a" * 20_000 + b"\r\n\r\n{}\r\n--xyz--\r\n",
          "headers": {"Content-Type": "multipart/form-data; boundary=xyz"}},
         400, "invalid_argument"),
        ("a part with 40 headers",
         {"content": b"--xyz\r\nContent-Disposition: form-data; name=\"options\"\r\n"
                     + b"".join(b"X-%d: a\r\n" % i for i in range(40))
                     + b"\r\n{}\r\n--xyz--\r\n",
          "headers": {"Content-Type": "multipart/form-data; boundary=xyz"}},
         400, "invalid_argument"),
        ("a broken multipart body",
         {"content": b"--xyz\r\nContent-Disposition: form-data; name=\"video\"; filename=\"a\"",
          "headers": {"Content-Type": "multipart/form-data; boundary=xyz"}},
         400, "invalid_argument"),
    ]  # fmt: skip
    for name, kwargs, status, code in cases:
        response = _raw(gateway, **kwargs)
        assert response.status_code == status, (name, response.text)
        assert response.json()["code"] == code, (name, response.json())
    assert _no_job_files(gateway)


def test_bad_reads(gateway, media):
    with gateway.client() as http:
        queued = submit(http, media["video"], [media["first"]], {"size": 96}).json()
        job = f"/v1/jobs/{queued['id']}"
        cases = [
            ("unknown job", "GET", "/v1/jobs/" + "a" * 32, 404, "not_found"),
            ("malformed job id", "GET", "/v1/jobs/..%2F..%2Fetc", 404, "not_found"),
            ("job id with a NUL", "GET", "/v1/jobs/abc%00def", 404, "not_found"),
            ("unknown result format", "GET", f"{job}/result?format=gif", 400, "invalid_argument"),
            ("result of a queued job", "GET", f"{job}/result", 409, "failed_precondition"),
            ("frame past the end", "GET", f"{job}/frames/500.png", 404, "not_found"),
            ("frame not written yet", "GET", f"{job}/frames/3.png", 404, "not_found"),
            ("negative frame", "GET", f"{job}/frames/-1.png", 400, "invalid_argument"),
            ("unknown status filter", "GET", "/v1/jobs?status=done", 400, "invalid_argument"),
            ("page size 0", "GET", "/v1/jobs?limit=0", 400, "invalid_argument"),
            ("wrong method", "PUT", "/v1/jobs", 405, "invalid_argument"),
            ("unknown endpoint", "GET", "/v1/nothing", 404, "not_found"),
            ("delete an unknown job", "DELETE", "/v1/jobs/" + "b" * 32, 404, "not_found"),
        ]  # fmt: skip
        for name, method, path, status, code in cases:
            response = http.request(method, path)
            assert response.status_code == status, (name, response.text)
            assert response.json()["code"] == code, (name, response.json())
        assert http.get(job).json()["status"] == "queued"  # the job is untouched


def test_a_hostile_filename_never_becomes_a_path(gateway, media, tmp_path):
    data_dir = gateway.settings.storage.data_dir
    with gateway.client() as http:
        names = ["../../../../tmp/evil.png", "/etc/passwd.png", "a\x00b.png", "..\\..\\x.png",
                 "\u202egnp.exe.png"]  # fmt: skip
        for name in names:
            files = [("video", ("../../v.mp4", media["video"].read_bytes())),
                     ("masks", (name, media["first"].read_bytes()))]  # fmt: skip
            response = http.post("/v1/jobs", files=files, data={"options": '{"size": 96}'})
            assert response.status_code == 202, (name, response.text)
            job_id = response.json()["id"]
            stored = sorted(p.name for p in (data_dir / "blobs/jobs" / job_id / "input").iterdir())
            assert stored == ["mask-000.png", "video.mp4"], stored
    assert not Path("/tmp/evil.png").exists()
