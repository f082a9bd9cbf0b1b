"""First-frame adaptation (opt-in): a few steps of fine-tuning of the mask decoder on
deformed copies of the first frame and its masks, before propagation.

Only the parameters of ``model.decoder`` (the mask decoder) change; the encoders, the
memory read and the instance branch keep their weights. The result is a copy; the model
given is left alone. Deterministic for a given seed (one thread, same inputs).
"""

from __future__ import annotations

from copy import deepcopy
from dataclasses import dataclass

import numpy as np
import torch

from isvos.model.network import ISVOS

ADAPTED_PREFIX = "decoder."


@dataclass(frozen=True)
class AdaptOptions:
    steps: int = 10
    lr: float = 5e-5
    batch_size: int = 2
    num_frames: int = 2  # the first frame as memory, a deformed copy as the query
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.num_frames < 2:
            raise ValueError("adaptation needs steps >= 1, batch_size >= 1, num_frames >= 2")
        if not self.lr > 0:
            raise ValueError("adaptation lr must be positive")


def _clips(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
           options: AdaptOptions) -> tuple[torch.Tensor, torch.Tensor, list[int]]:  # fmt: skip
    """A batch of clips: the first frame itself (the memory), then deformed copies of it
    (the queries) whose labels keep the first frame's ids (an object warped out of view
    simply has no pixels there)."""
    from isvos.train.augment import IMAGE_FILL, first_frame_ids, renumber_labels
    from isvos.train.augment import static_frame as deform

    ids = first_frame_ids(labels)
    labels = renumber_labels(labels, ids)
    frames, targets = [], []
    for _ in range(options.batch_size):
        warped = [deform(image, labels, rng, degrees=10.0, scale=(0.9, 1.1), shear=5.0,
                         translate=0.05, perspective=0.05, elastic=0.02, fill=IMAGE_FILL)
                  for _ in range(options.num_frames - 1)]  # fmt: skip
        frames.append(np.stack([image, *(f for f, _ in warped)]))
        targets.append(np.stack([labels, *(lab for _, lab in warped)]))
    x = torch.from_numpy(np.stack(frames)).permute(0, 1, 4, 2, 3).float().div_(255.0)
    counts = [len(ids)] * options.batch_size
    return x, torch.from_numpy(np.stack(targets).astype(np.int64)), counts


def adapt_to_first_frame(
    model: ISVOS, image: np.ndarray, labels: np.ndarray, options: AdaptOptions | None = None
) -> ISVOS:
    """A copy of ``model`` whose mask decoder is fine-tuned on ``image`` (RGB uint8 [h, w, 3]
    at processing size) and ``labels`` (uint8 [h, w], ids 1..O); eval mode."""
    from isvos.train.wrapper import TrainingWrapper

    options = options or AdaptOptions()
    if not labels.any():
        raise ValueError("first-frame adaptation needs at least one object in the masks")
    adapted = deepcopy(model).float().train()
    for module in adapted.modules():  # fixed statistics: one image is no batch
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eval()
    trained = []
    for name, parameter in adapted.named_parameters():
        parameter.requires_grad_(name.startswith(ADAPTED_PREFIX))
        if parameter.requires_grad:
            trained.append(parameter)
    device = next(adapted.parameters()).device
    optimiser = torch.optim.AdamW(trained, lr=options.lr, weight_decay=0.0)
    wrapper = TrainingWrapper(adapted, instance_weight=0.0)
    rng = np.random.default_rng(options.seed)
    generator_state = torch.get_rng_state()
    torch.manual_seed(options.seed)
    try:
        for _ in range(options.steps):
            frames, targets, counts = _clips(image, labels, rng, options)
            losses = wrapper(frames.to(device), targets.to(device), counts, top_p=1.0)
            optimiser.zero_grad(set_to_none=True)
            losses.total.backward()
            optimiser.step()
    finally:
        torch.set_rng_state(generator_state)
    for parameter in adapted.parameters():
        parameter.requires_grad_(False)
    return adapted.to(next(model.parameters()).dtype).eval()
