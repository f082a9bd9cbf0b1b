"""k-fold cross-validation splits of a pack's sequences (selection that does not see the
sequences it is scored on)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FOLD_SEED = 2023  # fixed: every recipe is scored on the same folds


def fold_sequences(names: Sequence[str], folds: int, fold: int, seed: int = FOLD_SEED) -> list[str]:
    """The sequences held out in ``fold`` (0-based) of ``folds``: the sorted names shuffled
    with ``seed`` and dealt round-robin, so folds differ in size by at most one."""
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    if not 0 <= fold < folds:
        raise ValueError(f"fold must be in [0, {folds}), got {fold}")
    ordered = sorted(set(names))
    if len(ordered) < folds:
        raise ValueError(f"{len(ordered)} sequences cannot make {folds} folds")
    order = np.random.default_rng(seed).permutation(len(ordered))
    return sorted(ordered[int(i)] for i in order[fold::folds])
