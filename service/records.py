"""Incremental persistence of session records (DESIGN decisions 3 and 12). Torch-free.

A ``RecordStore`` is the ``RecordSink`` of ``service.runner``: each time the record changes
it writes the new slot's payload once and then the (small) header, and deletes the payloads
of slots the header no longer lists. ``load`` assembles and validates the full record for a
re-prime. Subclasses say where the bytes go: memory, a directory, or (in the job service)
the header in Redis and the slots in the blob store.
"""

from __future__ import annotations

import os
from pathlib import Path

from isvos.limits import DEFAULT_SESSION_LIMITS, SessionLimits
from isvos.record import RecordHeader, SessionRecord, SlotPayload, encode_slot


class RecordStore:
    """Header and slot payloads kept apart; subclasses implement the five byte operations."""

    # Keep the payloads of slots the header no longer lists (older records still name them).
    keep_slots = False

    async def save(self, header: RecordHeader, slot: SlotPayload | None) -> None:
        if slot is not None:
            await self.put_slot(slot.frame_index, encode_slot(slot))
        await self.put_header(header.to_json(), header.next_frame_index)
        if self.keep_slots:
            return
        kept = {s.frame_index for s in header.slots}
        for index in await self.slot_indices():
            if index not in kept:
                await self.delete_slot(index)

    async def load(self, limits: SessionLimits = DEFAULT_SESSION_LIMITS) -> SessionRecord | None:
        """The latest record, or None when nothing was saved."""
        header = await self.get_header()
        if header is None:
            return None
        parsed = RecordHeader.from_json(header, limits)
        slots = {}
        for slot in parsed.slots:
            data = await self.get_slot(slot.frame_index)
            if data is not None:
                slots[slot.frame_index] = data
        return SessionRecord.from_parts(parsed, slots, limits)

    # ------------------------------------------------------------------ storage

    async def put_header(self, data: bytes, next_frame_index: int | None = None) -> None:
        raise NotImplementedError

    async def get_header(self) -> bytes | None:
        raise NotImplementedError

    async def put_slot(self, index: int, data: bytes) -> None:
        raise NotImplementedError

    async def get_slot(self, index: int) -> bytes | None:
        raise NotImplementedError

    async def delete_slot(self, index: int) -> None:
        raise NotImplementedError

    async def slot_indices(self) -> list[int]:
        raise NotImplementedError


class MemoryRecordStore(RecordStore):
    def __init__(self) -> None:
        self.header: bytes | None = None
        self.slots: dict[int, bytes] = {}
        self.writes = 0  # slot payloads written (each memorised frame once)

    async def put_header(self, data: bytes, next_frame_index: int | None = None) -> None:
        self.header = data

    async def get_header(self) -> bytes | None:
        return self.header

    async def put_slot(self, index: int, data: bytes) -> None:
        self.slots[index] = data
        self.writes += 1

    async def get_slot(self, index: int) -> bytes | None:
        return self.slots.get(index)

    async def delete_slot(self, index: int) -> None:
        self.slots.pop(index, None)

    async def slot_indices(self) -> list[int]:
        return list(self.slots)


class DirectoryRecordStore(RecordStore):
    """``header.json`` and ``slot-<index>.bin`` in a folder; each file replaced atomically."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def _write(self, name: str, data: bytes) -> None:
        temporary = self.folder / f".{name}.part"
        temporary.write_bytes(data)
        os.replace(temporary, self.folder / name)

    def _read(self, name: str) -> bytes | None:
        try:
            return (self.folder / name).read_bytes()
        except FileNotFoundError:
            return None

    async def put_header(self, data: bytes, next_frame_index: int | None = None) -> None:
        self._write("header.json", data)

    async def get_header(self) -> bytes | None:
        return self._read("header.json")

    async def put_slot(self, index: int, data: bytes) -> None:
        self._write(f"slot-{index}.bin", data)

    async def get_slot(self, index: int) -> bytes | None:
        return self._read(f"slot-{index}.bin")

    async def delete_slot(self, index: int) -> None:
        (self.folder / f"slot-{index}.bin").unlink(missing_ok=True)

    async def slot_indices(self) -> list[int]:
        return [int(p.stem.split("-", 1)[1]) for p in self.folder.glob("slot-*.bin")]
