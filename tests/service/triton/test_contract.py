"""The wire contract's helpers (no server needed)."""

from __future__ import annotations

import numpy as np
import pytest

from isvos import triton_contract as C

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("frame_gap: frame 5 out of order: expected 1", "frame_gap"),
        ("[StatusCode.INTERNAL] resource_exhausted: budget", "resource_exhausted"),
        ("[StatusCode.INTERNAL] frame 3: invalid_objects: object 3 is empty", "invalid_objects"),
        (
            "inference request for sequence x:0 to model 'isvos' must specify the START flag "
            "on the first request of the sequence",
            "not_found",
        ),  # fmt: skip
        ("something else entirely", "internal"),
        ("my_frame_gap: not a code at a word start", "internal"),
    ],
)
def test_parse_error(text, code):
    assert C.parse_error(text)[0] == code


def test_error_string_round_trip():
    assert C.parse_error(C.error_string("invalid_objects", "object 3: empty")) == (
        "invalid_objects",
        "object 3: empty",
    )


def test_to_float16_is_bit_exact():
    rng = np.random.default_rng(0)
    values = np.concatenate([
        rng.random(50_000), 10 ** rng.uniform(-12, 0, 50_000), -(10 ** rng.uniform(-12, 0, 500)),
        [0.0, -0.0, 2**-25, 3 * 2**-25, 1.5 * 2**-24, 2.5 * 2**-24, 2**-14, 65504.0, 1e-45],
    ]).astype(np.float32)  # fmt: skip
    expected = values.astype(np.float16).view(np.uint16)
    np.testing.assert_array_equal(C.to_float16(values).view(np.uint16), expected)
    ones = np.ones((2, 3), np.float32)
    assert C.to_float16(ones).dtype == np.float16


def test_correlation_ids():
    assert C.correlation_id("abc", 2) == "abc:2"
    assert C.split_correlation_id("job:7:2") == ("job:7", 2)
    for bad in ("abc", "abc:", ":2", "abc:-1", "abc:x"):
        with pytest.raises(ValueError):
            C.split_correlation_id(bad)
    assert len(set(C.INPUTS) | set(C.OUTPUTS)) == len(C.INPUTS) + len(C.OUTPUTS)
