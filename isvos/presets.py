"""Quality presets: named trade-offs of processing size and memory policy (model card,
docs/benchmarks.md "Presets" for the measurements that chose them).

A preset gives a processing short side (a multiple of the config's trained size) and the
memory options; what a caller sets explicitly wins over the preset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PresetName = Literal["fast", "balanced", "accurate"]
DEFAULT_PRESET: PresetName = "balanced"


@dataclass(frozen=True)
class Preset:
    name: str
    size_scale: float  # processing short side = config default x this (lite: 240 -> ...)
    max_memory_frames: int
    mem_every: int
    top_k: int

    def short_side(self, config_short_side: int) -> int:
        return int(round(config_short_side * self.size_scale / 8)) * 8

    def memory(self) -> dict[str, int]:
        return {"max_memory_frames": self.max_memory_frames, "mem_every": self.mem_every,
                "top_k": self.top_k}  # fmt: skip


PRESETS: dict[str, Preset] = {
    "fast": Preset("fast", 1.0, 8, 10, 20),
    "balanced": Preset("balanced", 1.0, 16, 5, 20),
    "accurate": Preset("accurate", 1.5, 16, 5, 20),
}


def get_preset(name: str | None) -> Preset:
    """The preset ``name`` (the default for None or ""); ``ValueError`` names the choices."""
    key = name or DEFAULT_PRESET
    if key not in PRESETS:
        raise ValueError(f"unknown preset {key!r}: {' | '.join(PRESETS)}")
    return PRESETS[key]


def resolve(
    name: str | None,
    config_short_side: int,
    *,
    short_side: int | None = None,
    memory: dict | None = None,
) -> tuple[int, dict]:
    """(processing short side, memory options) of preset ``name`` for a config trained at
    ``config_short_side``, with the caller's explicit ``short_side`` and ``memory`` entries
    (those not None) on top."""
    preset = get_preset(name)
    merged = preset.memory()
    merged.update({k: v for k, v in (memory or {}).items() if v is not None})
    return short_side or preset.short_side(config_short_side), merged
