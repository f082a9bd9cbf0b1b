"""Quality presets resolve to the options the model card documents; explicit options win;
the job options and the stream apply them the same way."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from isvos.presets import DEFAULT_PRESET, PRESETS, get_preset, resolve
from service.jobs.models import JobOptions

pytestmark = pytest.mark.timeout(30)
CARD = Path(__file__).resolve().parents[2] / "docs" / "model_card.md"


def test_presets_resolve_with_explicit_options_on_top():
    assert get_preset(None).name == get_preset("").name == DEFAULT_PRESET == "balanced"
    size, memory = resolve("balanced", 240)
    assert size == 240 and memory == {"max_memory_frames": 16, "mem_every": 5, "top_k": 20}
    size, memory = resolve("accurate", 240, short_side=300, memory={"top_k": 7, "mem_every": None})
    assert size == 300 and memory["top_k"] == 7
    assert memory["mem_every"] == PRESETS["accurate"].mem_every
    assert resolve("accurate", 96)[0] == PRESETS["accurate"].short_side(96) == 144
    with pytest.raises(ValueError, match="unknown preset 'best': fast | balanced | accurate"):
        get_preset("best")


def test_the_model_card_documents_each_preset_as_it_is():
    """The card's preset table row gives the preset's lite size and memory options."""
    text = CARD.read_text()
    for name, preset in PRESETS.items():
        row = re.search(rf"^\| `{name}` \| (\d+) \| (\d+) \| (\d+) \| (\d+) \|", text, re.M)
        assert row, f"no row for {name} in {CARD.name}"
        assert tuple(int(v) for v in row.groups()) == (
            preset.short_side(240),
            preset.max_memory_frames,
            preset.mem_every,
            preset.top_k,
        ), name


def test_job_options_take_the_preset_where_the_caller_set_nothing():
    fast = JobOptions.model_validate_json('{"preset": "fast", "memory": {"top_k": 9}}')
    resolved = fast.with_preset(240)
    preset = PRESETS["fast"]
    assert resolved.size == preset.short_side(240) and resolved.preset == "fast"
    assert resolved.memory.top_k == 9  # set by the caller
    assert resolved.memory.mem_every == preset.mem_every
    assert resolved.memory.max_memory_frames == preset.max_memory_frames
    plain = JobOptions.model_validate_json('{"size": 200}').with_preset(240)
    assert (plain.preset, plain.size, plain.memory.mem_every) == ("balanced", 200, 5)
    # What is stored is resolved: reading it back changes nothing.
    again = JobOptions.model_validate_json(resolved.model_dump_json()).with_preset(240)
    assert again == resolved
