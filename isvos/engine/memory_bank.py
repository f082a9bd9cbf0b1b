"""The per-session memory bank (spec §1.8 memory management, §4.1 state, §4.4 objects).

Keys are shared by all objects (object-agnostic, §1.5); values are per object. Buffers are
allocated for ``max_memory_frames`` slots up front, so the bank's bytes do not grow with
the video. A slot records which objects have values in it: an object added at frame k has
values only in slots memorised from k on (XMem-style grouping), and reads use only those.

Pinning: the first frame's slot is pinned for good; a frame carrying user masks is pinned for
those objects (their "anchor"). A later mask for the same object moves its anchor; beyond
``max_pins`` pinned slots, the oldest non-first pin is released. Eviction is FIFO (by frame
index) among unpinned slots.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Slot:
    frame_index: int
    # Objects whose values were encoded in this slot, in the order they were encoded.
    encoded_objects: tuple[int, ...]
    # The session's first memorised frame: never evicted.
    first: bool = False


@dataclass
class MemoryBank:
    capacity: int
    key_dim: int
    value_dim: int
    height: int  # at stride 16
    width: int
    device: torch.device
    dtype: torch.dtype
    keys: torch.Tensor = field(init=False)  # [C_k, T, n]
    values: dict[int, torch.Tensor] = field(init=False)  # object id -> [C_v, T, n]
    slots: list[Slot | None] = field(init=False)
    anchors: dict[int, int] = field(init=False)  # object id -> frame index of its pin
    evictions: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        n = self.height * self.width
        self.keys = torch.zeros(
            self.key_dim, self.capacity, n, device=self.device, dtype=self.dtype
        )
        self.values = {}
        self.slots = [None] * self.capacity
        self.anchors = {}

    # ------------------------------------------------------------------ objects

    def add_object(self, object_id: int) -> None:
        n = self.height * self.width
        self.values[object_id] = torch.zeros(
            self.value_dim, self.capacity, n, device=self.device, dtype=self.dtype
        )

    def remove_object(self, object_id: int) -> None:
        self.values.pop(object_id, None)
        self.anchors.pop(object_id, None)

    # ------------------------------------------------------------------ slots

    def pinned_frames(self) -> set[int]:
        pinned = {s.frame_index for s in self.slots if s is not None and s.first}
        return pinned | set(self.anchors.values())

    def is_pinned(self, slot: Slot) -> bool:
        return slot.first or slot.frame_index in self.anchors.values()

    def insert(
        self,
        frame_index: int,
        key: torch.Tensor,
        values: dict[int, torch.Tensor],
        *,
        encoded_objects: tuple[int, ...],
        first: bool,
        anchor_objects: tuple[int, ...],
        max_pins: int,
    ) -> None:
        """key [C_k, h, w]; values {live object id: [C_v, h, w]}; ``encoded_objects`` lists
        every object the values were encoded with (removed ones too, for exact re-priming)."""
        position = self._free_position()
        self.keys[:, position] = key.flatten(1).to(self.dtype)
        for object_id, value in values.items():
            self.values[object_id][:, position] = value.flatten(1).to(self.dtype)
        self.slots[position] = Slot(frame_index, encoded_objects, first)
        for object_id in anchor_objects:
            self.anchors[object_id] = frame_index
        self._enforce_pin_cap(max_pins)

    def _free_position(self) -> int:
        for position, slot in enumerate(self.slots):
            if slot is None:
                return position
        candidates = [
            (slot.frame_index, position)
            for position, slot in enumerate(self.slots)
            if slot is not None and not self.is_pinned(slot)
        ]
        if not candidates:  # cannot happen while max_pins < capacity
            raise RuntimeError("memory bank is full of pinned frames")
        _, position = min(candidates)
        self.slots[position] = None
        self.evictions += 1
        return position

    def _enforce_pin_cap(self, max_pins: int) -> None:
        while len(self.pinned_frames()) > max_pins:
            first = {s.frame_index for s in self.slots if s is not None and s.first}
            releasable = sorted(f for f in set(self.anchors.values()) if f not in first)
            if not releasable:
                return
            oldest = releasable[0]
            self.anchors = {o: f for o, f in self.anchors.items() if f != oldest}

    # ------------------------------------------------------------------ reading

    def ordered_slots(self) -> list[tuple[int, Slot]]:
        """(position, slot) pairs in frame order, so reads do not depend on buffer layout."""
        used = [(s.frame_index, p, s) for p, s in enumerate(self.slots) if s is not None]
        return [(p, s) for _, p, s in sorted(used)]

    def groups(self, object_ids: list[int]) -> list[tuple[list[int], list[int]]]:
        """Objects grouped by the slots they have values in: [(object ids, positions)]."""
        ordered = self.ordered_slots()
        by_positions: dict[tuple[int, ...], list[int]] = {}
        for object_id in object_ids:
            positions = tuple(p for p, s in ordered if object_id in s.encoded_objects)
            if positions:
                by_positions.setdefault(positions, []).append(object_id)
        return [(objects, list(positions)) for positions, objects in by_positions.items()]

    def gather(
        self, object_ids: list[int], positions: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory keys [C_k, P*n] and values [O, C_v, P*n] for one group."""
        index = torch.tensor(positions, device=self.device)
        keys = self.keys.index_select(1, index).flatten(1)
        values = torch.stack([self.values[o].index_select(1, index).flatten(1) for o in object_ids])
        return keys, values

    def nbytes(self) -> int:
        total = self.keys.numel() * self.keys.element_size()
        for value in self.values.values():
            total += value.numel() * value.element_size()
        return total

    def used_slots(self) -> int:
        return sum(slot is not None for slot in self.slots)


def bank_bytes(
    *,
    capacity: int,
    key_dim: int,
    value_dim: int,
    height: int,
    width: int,
    objects: int,
    bytes_per_element: int,
) -> int:
    """Memory-bank size from the formula of spec §4.1: (T*C_k*n + O*T*C_v*n) * bytes."""
    n = height * width
    return (capacity * key_dim * n + objects * capacity * value_dim * n) * bytes_per_element
