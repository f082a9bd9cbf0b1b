"""Training: the loss falls on a fixed batch; resume continues exactly where it stopped."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from isvos.model import build
from isvos.train.loop import STATE_FORMAT, TrainOptions, load_train_state, train
from isvos.train.synthetic import synthetic_clip
from isvos.train.wrapper import TrainingWrapper

pytestmark = pytest.mark.timeout(240)


def test_a_few_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = build("tiny").train()
    wrapper = TrainingWrapper(model, instance_weight=0.2)
    rng = np.random.default_rng(0)
    clips = [synthetic_clip(rng, num_frames=3, height=64, width=64) for _ in range(2)]
    frames = torch.from_numpy(np.stack([c[0] for c in clips])).permute(0, 1, 4, 2, 3) / 255.0
    labels = torch.from_numpy(np.stack([c[1] for c in clips]).astype(np.int64))
    counts = [int(c[1][0].max()) for c in clips]
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(15):
        result = wrapper(frames.float(), labels, counts, top_p=1.0)
        optimiser.zero_grad()
        result.total.backward()
        optimiser.step()
        losses.append(float(result.total.detach()))
    assert losses[-1] < 0.7 * losses[0], losses


def options(out, steps):
    return TrainOptions(
        config="tiny", data="synthetic", out=str(out), steps=steps, batch_size=2,
        num_frames=3, crop_size=64, lr=1e-3, warmup_steps=2, threads=1, eval_every=0,
        save_every_s=0.0,
    )  # fmt: skip


def test_resume_continues_from_the_same_step_and_optimiser_state(tmp_path):
    straight = train(options(tmp_path / "straight", 6))

    class CutOff(Exception):
        pass

    def cut_off(step, record):
        if step == 4:  # killed during step 4: last.pt holds step 3
            raise CutOff

    with pytest.raises(CutOff):
        train(options(tmp_path / "cut", 6), progress=cut_off)
    first_half = load_train_state(tmp_path / "cut" / "last.pt")
    assert first_half["step"] == 3
    train(options(tmp_path / "cut", 6), resume=True)
    # Both states load with weights_only=True: plain types and tensors only.
    a = torch.load(straight / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 6
    for name, tensor in a["checkpoint"]["state_dict"].items():
        assert torch.allclose(tensor, b["checkpoint"]["state_dict"][name], atol=1e-6), name
    state_a, state_b = a["optimiser"]["state"], b["optimiser"]["state"]
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.allclose(state_a[key]["exp_avg"], state_b[key]["exp_avg"], atol=1e-6)
    logged = [line for line in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert len(logged) == 7  # step 4 was logged before the cut, then redone


UNPICKLED: list[str] = []


def _unpickle_side_effect(tag: str) -> str:
    UNPICKLED.append(tag)
    return tag


class Payload:
    """An arbitrary object: unpickling it calls ``_unpickle_side_effect``."""

    def __reduce__(self):
        return _unpickle_side_effect, ("ran",)


def test_resume_refuses_a_state_holding_an_arbitrary_object(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"format": STATE_FORMAT, "step": 1, "extra": Payload()}, run / "last.pt")
    with pytest.raises(ValueError, match="plain Python types.*_unpickle_side_effect"):
        train(options(run, 2), resume=True)
    with pytest.raises(ValueError, match="refused"):
        load_train_state(run / "last.pt")
    assert UNPICKLED == [], "the object was unpickled"
    # The same file loads (and runs the object's code) when pickles are trusted.
    assert torch.load(run / "last.pt", weights_only=False)["extra"] == "ran"
    assert UNPICKLED == ["ran"]


def test_the_weight_average_follows_the_weights_and_resumes_exactly(tmp_path):
    from dataclasses import replace

    from isvos.model.build import load_checkpoint_file
    from isvos.train.loop import WeightAverage

    model = build("tiny")
    average = WeightAverage(model, decay=0.5)
    first = {k: v.clone() for k, v in average.shadow.items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    average.update(model)  # decay min(0.5, 2/11): mostly the new weights
    name = next(n for n, _ in model.named_parameters())
    expected = first[name] + (1 - 2 / 11) * 1.0
    assert torch.allclose(average.shadow[name], expected, atol=1e-6)
    assert average.averaged(model).state_dict()[name].equal(average.shadow[name])

    with_ema = lambda out: replace(options(out, 6), ema_decay=0.9)  # noqa: E731
    straight = train(with_ema(tmp_path / "straight"))

    class CutOff(Exception):
        pass

    def cut_off(step, record):
        if step == 4:
            raise CutOff

    with pytest.raises(CutOff):
        train(with_ema(tmp_path / "cut"), progress=cut_off)
    train(with_ema(tmp_path / "cut"), resume=True)
    a = load_checkpoint_file(straight / "final.pt")["state_dict"]
    b = load_checkpoint_file(tmp_path / "cut" / "final.pt")["state_dict"]
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    raw = load_train_state(straight / "last.pt")["checkpoint"]["state_dict"]
    assert not torch.allclose(a[name], raw[name])  # final.pt holds the average, not the raw
