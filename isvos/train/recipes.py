"""Named training recipes: the options a recipe sets, over :class:`TrainOptions`' defaults.

``v1`` is the recipe of the shipped ``lite`` checkpoint (docs/model_card.md); ``v2`` adds
what round 2 of the recipe tries (procedural clips, motion blur, noise and gamma, look-alike
pairs, a weight average). The cross-validation benchmark scores recipes on the same folds.
"""

from __future__ import annotations

from dataclasses import fields, replace

from .loop import TrainOptions

V1 = {"lr": 2e-4, "crop_size": 192, "batch_size": 4}
V2 = {
    **V1,
    "procedural_fraction": 0.25,
    "motion_blur_prob": 0.3,
    "noise_prob": 0.2,
    "gamma": 0.2,
    "lookalike_prob": 0.2,
    "ema_decay": 0.99,
    # Only used with a static stage (static_fraction > 0).
    "static_elastic": 0.05,
    "static_occluder_prob": 0.5,
}
RECIPES: dict[str, dict] = {"v1": V1, "v2": V2}


def recipe_options(name: str, **overrides) -> TrainOptions:
    """``TrainOptions`` of recipe ``name`` with ``overrides`` (field names) on top."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}: {' | '.join(RECIPES)}")
    known = {f.name for f in fields(TrainOptions)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"not training options: {', '.join(unknown)}")
    return replace(TrainOptions(), **{**RECIPES[name], **overrides})
