"""The ``propose`` request kind: the Triton model and the local engine give identical
proposals (the same exported graphs, the same post-processing)."""

from __future__ import annotations

import numpy as np
import pytest

from isvos.proposals import make_proposals

pytestmark = pytest.mark.timeout(120)


def test_triton_and_local_proposals_are_identical(triton_backend, local_backend, clip):
    frames, _ = clip
    for image in (frames[0], frames[17]):
        remote = triton_backend.propose(image)
        local = local_backend.propose(image)
        np.testing.assert_array_equal(remote[0], local[0])
        np.testing.assert_array_equal(remote[1], local[1])
        size = image.shape[:2]
        a, _ = make_proposals(*remote, size, (size[0] * 2, size[1] * 2))
        b, _ = make_proposals(*local, size, (size[0] * 2, size[1] * 2))
        assert [p.score for p in a] == [p.score for p in b] and a
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x.mask, y.mask)


def test_a_proposal_request_needs_an_image(triton_backend):
    from isvos import triton_contract as C
    from service.backends.base import BackendError
    from tests.service.triton.conftest import raw

    with pytest.raises(BackendError) as caught:
        raw(triton_backend, C.PROPOSE, "propose-x:0", start=True, end=True)
    assert caught.value.code == "invalid_argument" and "IMAGE" in caught.value.message
