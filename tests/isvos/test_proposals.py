"""isvos.proposals: scoring, painting without overlap, ranking and the click rule."""

from __future__ import annotations

import numpy as np

from isvos.proposals import make_proposals, proposal_maps

SIZE = (32, 48)  # processing size; the maps are at stride 4: 8 x 12


def _maps(*boxes: tuple[int, int, int, int], inside: float = 0.9) -> np.ndarray:
    """Stride-4 probability maps, one per box (y0, y1, x0, x1 at stride 4)."""
    maps = np.full((len(boxes), 8, 12), 0.05, np.float16)
    for q, (y0, y1, x0, x1) in enumerate(boxes):
        maps[q, y0:y1, x0:x1] = inside
    return maps


def test_maps_are_upsampled_to_the_requested_size():
    maps = proposal_maps(_maps((0, 4, 0, 6)), SIZE, (64, 96))
    assert maps.shape == (1, 64, 96) and maps.dtype == np.float32
    assert maps[0, 10, 10] > 0.5 > maps[0, 50, 80]


def test_proposals_are_ranked_disjoint_and_duplicates_dropped():
    # q0: a box; q1: nearly the same box, less sure; q2: a box elsewhere.
    maps = _maps((0, 4, 0, 6), (0, 4, 0, 7), (5, 8, 8, 12))
    objectness = np.array([0.9, 0.5, 0.3], np.float32)
    found, selected = make_proposals(objectness, maps, SIZE, SIZE)
    assert selected is None
    assert len(found) == 2  # q1 kept under half of its pixels
    assert [p.score for p in found] == sorted((p.score for p in found), reverse=True)
    assert not (found[0].mask & found[1].mask).any()
    x, y, w, h = found[0].bbox  # bilinear upsampling moves the edges by up to 2 pixels
    assert (x, y) == (0, 0) and abs(w - 24) <= 2 and abs(h - 16) <= 2
    assert abs(found[0].area - 24 * 16) <= 0.1 * 24 * 16
    assert not any(p.for_point for p in found)


def test_a_click_selects_the_proposal_under_it_or_the_best_query_covering_it():
    maps = _maps((0, 4, 0, 6), (0, 4, 0, 7), (5, 8, 8, 12))
    objectness = np.array([0.9, 0.5, 0.3], np.float32)
    found, selected = make_proposals(objectness, maps, SIZE, SIZE, point=(3, 3))
    assert selected == 0 and not found[0].for_point
    # Only the dropped duplicate covers x = 25: its whole mask comes back for the click.
    found, selected = make_proposals(objectness, maps, SIZE, SIZE, point=(25, 3))
    assert selected == 2 and found[2].for_point
    assert abs(found[2].area - 28 * 16) <= 0.1 * 28 * 16 and found[2].mask[3, 25]
    assert make_proposals(objectness, maps, SIZE, SIZE, point=(40, 2))[1] is None
    assert make_proposals(objectness, maps, SIZE, SIZE, point=(500, 2))[1] is None


def test_small_masks_and_the_count_are_bounded():
    maps = _maps((0, 1, 0, 1), (2, 8, 0, 12))
    objectness = np.array([0.99, 0.5], np.float32)
    found, _ = make_proposals(objectness, maps, SIZE, (320, 480), max_proposals=1)
    assert len(found) == 1 and found[0].area > 1000  # the 40x40 one is under the minimum
