"""Broken real inputs (truncated, bit-flipped, header-corrupted mp4, webm, png, RLE and
images) are read or refused with a media code, under a memory and a time limit. The long
run is benchmarks/fuzz_media.py."""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.timeout(240)
_spec = importlib.util.spec_from_file_location("fuzz_media", REPO / "benchmarks" / "fuzz_media.py")
fuzz_media = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz_media)


def test_broken_media_is_read_or_refused_never_a_crash_or_a_hang():
    results = fuzz_media.fuzz(fuzz_media.KINDS, cases=24, seed=3, timeout_s=90)
    assert len(results) == len(fuzz_media.KINDS)
    for result in results:
        assert "error" not in result, result
        assert not result["crashes"], result
        assert result["cases"] == 24
        refused = sum(n for outcome, n in result["outcomes"].items() if outcome != "read")
        assert refused >= 6, result  # the truncations at least are refused


def test_metadata_that_is_not_utf8_is_not_fatal(tmp_path):
    """Found by the media fuzzing: a bit flip in a WebM tag made PyAV raise
    UnicodeDecodeError while opening the file."""
    from service.media.video import probe_video

    with tempfile.TemporaryDirectory() as tmp:
        data, _ = fuzz_media.originals(Path(tmp))["webm"]
    tag = data.find(b"ENCODER")  # a metadata key of the WebM file
    assert tag > 0
    broken = tmp_path / "broken.webm"
    broken.write_bytes(data[: tag + 6] + b"\xd2" + data[tag + 7 :])  # "ENCODE\xd2": not UTF-8
    info = probe_video(broken)
    assert (info.width, info.height) == (320, 240)


def test_a_stream_with_an_unknown_codec_is_refused(tmp_path):
    """Found by the media fuzzing: a bit flip in a WebM's codec id left PyAV with no codec
    context, and probing raised AttributeError."""
    from service.media.errors import MediaError
    from service.media.video import probe_video

    with tempfile.TemporaryDirectory() as tmp:
        data, _ = fuzz_media.originals(Path(tmp))["webm"]
    codec = data.find(b"V_VP9")
    assert codec > 0
    broken = tmp_path / "unknown-codec.webm"
    broken.write_bytes(data[:codec] + b"V_XX9" + data[codec + 5 :])
    with pytest.raises(MediaError) as refused:
        probe_video(broken)
    assert refused.value.code == "video_unreadable" and "codec" in refused.value.message
