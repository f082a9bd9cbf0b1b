"""Instance proposals: the instance branch's object queries as ranked, non-overlapping masks.
Torch-free (the backends return the raw outputs of ``Engine.propose``).

Mask2Former-style instance inference (spec §1.4): each query's mask is its probability map
above 0.5, scored by the query's object probability times the mean probability inside the
mask. Masks are painted in score order, each pixel to the first (best) mask that claims it;
a mask left with under half of its pixels, or fewer than ``min_area`` pixels, is dropped
(it was a duplicate of a better one). What remains is ranked by score.

A click names an object: with a point, the proposal covering it is selected; when none
does (the object's query lost the painting to a better-scored neighbour), the best-scored
query mask covering the point is added, whole, as a proposal ``for_point`` (it may overlap
the others). The rule was chosen on DAVIS training frames, where it ties with taking only
the ranked set; on frames with several objects it finds the ones the ranking drops.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# A proposal keeps at least this share of its own pixels after better ones are painted.
KEEP_FRACTION = 0.5
# Smallest proposal, as a share of the image (and at least MIN_AREA_PIXELS pixels).
MIN_AREA_FRACTION = 0.0005
MIN_AREA_PIXELS = 16


@dataclass(frozen=True)
class Proposal:
    mask: np.ndarray  # bool [H, W] at the requested size
    score: float  # object probability x mean mask probability, in [0, 1]
    area: int
    bbox: tuple[int, int, int, int]  # x, y, width, height
    for_point: bool = False  # a query's whole mask chosen for a point (may overlap others)


def proposal_maps(
    probabilities: np.ndarray, processing_size: tuple[int, int], size: tuple[int, int]
) -> np.ndarray:
    """Stride-4 mask probabilities [N, ceil(h/4), ceil(w/4)] -> float32 [N, H, W] at ``size``
    (bilinear, through the processing size, as the label maps of a step are upsampled)."""
    h, w = processing_size
    height, width = size
    maps = np.empty((probabilities.shape[0], height, width), np.float32)
    for i, small in enumerate(probabilities.astype(np.float32)):
        full = cv2.resize(small, (small.shape[1] * 4, small.shape[0] * 4),
                          interpolation=cv2.INTER_LINEAR)[:h, :w]  # fmt: skip
        maps[i] = cv2.resize(full, (width, height), interpolation=cv2.INTER_LINEAR)
    return maps


def make_proposals(
    objectness: np.ndarray,
    probabilities: np.ndarray,
    processing_size: tuple[int, int],
    size: tuple[int, int],
    *,
    max_proposals: int = 20,
    point: tuple[int, int] | None = None,
) -> tuple[list[Proposal], int | None]:
    """Ranked, non-overlapping proposals at ``size`` (H, W) from ``Engine.propose``'s
    outputs for a frame processed at ``processing_size``, and the index of the one
    selected by ``point`` (x, y), if any (see the module docstring)."""
    maps = proposal_maps(probabilities, processing_size, size)
    masks = maps > 0.5
    scores = []
    for q in range(len(maps)):
        inside = maps[q][masks[q]]
        mask_score = float(inside.mean()) if inside.size else 0.0
        scores.append(float(objectness[q]) * mask_score)
    min_area = max(MIN_AREA_PIXELS, int(MIN_AREA_FRACTION * size[0] * size[1]))
    taken = np.zeros(size, bool)
    proposals: list[Proposal] = []
    # Stable order: equal scores keep query order, so every backend ranks alike.
    for q in sorted(range(len(maps)), key=lambda i: -scores[i]):
        own = int(masks[q].sum())
        free = masks[q] & ~taken
        area = int(free.sum())
        if own == 0 or area < min_area or area < KEEP_FRACTION * own:
            continue
        taken |= free
        proposals.append(Proposal(free, round(scores[q], 6), area, _bbox(free)))
        if len(proposals) == max_proposals:
            break
    if point is None:
        return proposals, None
    x, y = point
    if not (0 <= y < size[0] and 0 <= x < size[1]):
        return proposals, None
    hit = proposal_at(proposals, x, y)
    if hit is not None:
        return proposals, hit
    covering = [q for q in range(len(maps)) if masks[q][y, x]]
    if not covering:
        return proposals, None
    best = max(covering, key=lambda q: (scores[q], -q))
    mask = masks[best]
    proposals.append(Proposal(mask, round(scores[best], 6), int(mask.sum()), _bbox(mask), True))
    return proposals, len(proposals) - 1


def proposal_at(proposals: list[Proposal], x: int, y: int) -> int | None:
    """Index of the proposal covering pixel (x, y), or None."""
    for i, proposal in enumerate(proposals):
        height, width = proposal.mask.shape
        if 0 <= y < height and 0 <= x < width and proposal.mask[y, x]:
            return i
    return None


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1
