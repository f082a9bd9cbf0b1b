"""Live sessions of one inference host: admission, idle TTL, per-session locks, epoch fencing.

Both hosts use it: ``service.backends.local`` (the engine in-process) and the Triton model
(``model_repo/isvos/1/model.py``), so admission and fencing behave the same on both.

- **Admission** (DESIGN decision 5): a session is refused with ``resource_exhausted`` when
  its processing size, objects or memory capacity exceed the host's ``SessionLimits``, when
  the host holds ``max_sessions`` live sessions, or when its memory bank (spec 4.1 formula,
  reserved for ``max_objects``) would exceed the byte budget. Nothing is queued silently.
- **Epochs** (DESIGN decision 4): a session id has one live epoch. Opening or priming epoch
  e + 1 frees epoch e at once; a request for an older epoch is ``stale_epoch``; opening the
  live epoch again is ``already_exists`` (never a silent reset).
- **TTL**: ``sweep`` frees sessions idle longer than ``ttl_s`` (hosts call it periodically;
  Triton does not tell a model when a sequence expires). A session in use is never swept.
- **Locks**: ``use`` holds a session's own lock, so two callers never step one session at
  once while other sessions go on.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from isvos.config import MemoryOptions
from isvos.limits import DEFAULT_SESSION_LIMITS, MIN_PROCESSING_SIDE, SessionLimits
from isvos.processing import padded_size
from isvos.record import SessionRecord

from .errors import AdmissionError, EngineError, SessionLookupError
from .memory_bank import bank_bytes
from .session import Engine, MemoriseHook, Session


@dataclass
class LiveSession:
    session_id: str
    epoch: int
    session: Session
    reserved_bytes: int
    opened_at: float
    last_used: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Host-specific settings of the session (e.g. the Triton model's record attachment).
    extra: dict = field(default_factory=dict)


class SessionManager:
    def __init__(
        self, engine: Engine, limits: SessionLimits = DEFAULT_SESSION_LIMITS, clock=time.monotonic
    ) -> None:
        self.engine = engine
        self.limits = limits
        self.clock = clock
        self.sessions: dict[str, LiveSession] = {}
        self.counters: Counter = Counter()
        self.refusals: Counter = Counter()
        self._lock = threading.RLock()
        self.element_size = torch.empty((), dtype=engine.memory_dtype).element_size()

    # ------------------------------------------------------------------ lifecycle

    def open(
        self,
        session_id: str,
        epoch: int,
        processing_size: tuple[int, int],
        options: MemoryOptions | dict | None = None,
        *,
        frame_stride: int = 1,
        on_memorise: MemoriseHook | None = None,
        extra: dict | None = None,
    ) -> LiveSession:
        memory = _memory_options(options)
        size = (int(processing_size[0]), int(processing_size[1]))
        with self._lock:
            self._supersede(session_id, epoch)
            reserved = self._admit(size, memory)
            session = self.engine.open_session(
                size, memory, frame_stride=frame_stride, on_memorise=on_memorise
            )
            self.counters["opens"] += 1
            return self._add(session_id, epoch, session, reserved, extra)

    def prime(
        self,
        session_id: str,
        epoch: int,
        record: SessionRecord,
        *,
        resume_index: int | None = None,
        on_memorise: MemoriseHook | None = None,
        extra: dict | None = None,
    ) -> LiveSession:
        """A session restored from ``record``. The record is checked (limits, weights)
        before the memory bank is allocated; then its slots are re-encoded."""
        header = record.header
        header.validate(self.limits)
        self.engine.check_record(header)
        header.validate_resume(resume_index)
        with self._lock:
            self._supersede(session_id, epoch)
            reserved = self._admit(header.processing_size, header.memory_options())
            # Reserve the slot under the lock, then re-encode outside it.
            placeholder = LiveSession(session_id, epoch, None, reserved, self.clock(),  # type: ignore[arg-type]
                                      self.clock())  # fmt: skip
            placeholder.lock.acquire()
            self.sessions[session_id] = placeholder
        try:
            session = self.engine.prime(record, resume_index=resume_index, on_memorise=on_memorise)
        except BaseException:
            placeholder.lock.release()  # before the manager's lock: never hold both
            with self._lock:
                if self.sessions.get(session_id) is placeholder:
                    del self.sessions[session_id]
            raise
        placeholder.session = session
        placeholder.extra = dict(extra or {})
        placeholder.last_used = self.clock()
        placeholder.lock.release()
        self.counters["primes"] += 1
        return placeholder

    def get(self, session_id: str, epoch: int) -> LiveSession:
        """The live session of ``session_id`` at ``epoch``: ``not_found`` when there is none
        (never opened, closed, swept, another host), ``stale_epoch`` when it has moved on."""
        with self._lock:
            live = self.sessions.get(session_id)
            if live is None or live.epoch < epoch:
                raise SessionLookupError(
                    f"session {session_id} (epoch {epoch}) is not open on this host",
                    "not_found",
                )
            if live.epoch > epoch:
                raise SessionLookupError(
                    f"session {session_id} moved on to epoch {live.epoch}; epoch {epoch} is stale",
                    "stale_epoch",
                )
            return live

    @contextmanager
    def use(self, session_id: str, epoch: int) -> Iterator[LiveSession]:
        """Hold the session's lock while the caller works on it."""
        live = self.get(session_id, epoch)
        with live.lock:
            if live.session is None or live.session.closed:  # closed while we waited
                raise SessionLookupError(f"session {session_id} was closed", "not_found")
            try:
                yield live
            finally:
                live.last_used = self.clock()

    def close(self, session_id: str, epoch: int | None = None) -> bool:
        """Free the session (``epoch`` None: whatever epoch is live). A close of an older
        epoch leaves the newer one alone. Idempotent; True when something was freed."""
        with self._lock:
            live = self.sessions.get(session_id)
            if live is None or (epoch is not None and live.epoch != epoch):
                return False
            del self.sessions[session_id]
            self.counters["closes"] += 1
        self._free(live)
        return True

    def close_all(self) -> None:
        for session_id in list(self.sessions):
            self.close(session_id)

    def sweep(self) -> list[tuple[str, int]]:
        """Free sessions idle longer than the TTL; returns their (id, epoch)."""
        if self.limits.ttl_s <= 0:
            return []
        now = self.clock()
        freed = []
        with self._lock:
            for session_id, live in list(self.sessions.items()):
                if now - live.last_used <= self.limits.ttl_s or not live.lock.acquire(False):
                    continue
                del self.sessions[session_id]
                self.counters["evictions"] += 1
                freed.append(live)
        for live in freed:
            self._free(live, locked=True)
        return [(live.session_id, live.epoch) for live in freed]

    # ------------------------------------------------------------------ accounting

    def reserved_bytes(self) -> int:
        with self._lock:
            return sum(live.reserved_bytes for live in self.sessions.values())

    def memory_bytes(self) -> int:
        with self._lock:
            live = [s.session for s in self.sessions.values() if s.session is not None]
        return sum(s.memory_bytes() for s in live if not s.closed)

    def session_bytes(
        self, processing_size: tuple[int, int], options: MemoryOptions | dict | None = None
    ) -> int:
        """Memory-bank bytes a session reserves (spec 4.1, for its ``max_objects``)."""
        memory = _memory_options(options)
        config = self.engine.config
        padded = padded_size(processing_size, config.size_divisibility)
        return bank_bytes(
            capacity=memory.max_memory_frames, key_dim=config.key_dim,
            value_dim=config.value_dim, height=padded[0] // 16, width=padded[1] // 16,
            objects=memory.max_objects, bytes_per_element=self.element_size,
        )  # fmt: skip

    def stats(self) -> dict:
        now = self.clock()
        with self._lock:
            entries = list(self.sessions.values())
        sessions = [
            {
                "id": live.session_id,
                "epoch": live.epoch,
                "next_frame_index": live.session.next_frame_index if live.session else None,
                "objects": list(live.session.object_ids) if live.session else [],
                "memory_bytes": live.session.memory_bytes()
                if live.session and not live.session.closed
                else 0,
                "reserved_bytes": live.reserved_bytes,
                "idle_s": round(now - live.last_used, 3),
            }
            for live in entries
        ]
        return {
            "sessions": len(sessions),
            "memory_bank_bytes": sum(s["memory_bytes"] for s in sessions),
            "reserved_bytes": sum(s["reserved_bytes"] for s in sessions),
            "budget_bytes": self.limits.budget_bytes,
            "max_sessions": self.limits.max_sessions,
            "ttl_seconds": self.limits.ttl_s,
            "opens": self.counters["opens"],
            "re_primes": self.counters["primes"],
            "closes": self.counters["closes"],
            "evictions": self.counters["evictions"],
            "superseded": self.counters["superseded"],
            "refusals": dict(self.refusals),
            "session_list": sessions,
        }

    # ------------------------------------------------------------------ internals

    def _supersede(self, session_id: str, epoch: int) -> None:
        """Fence: refuse the live or an older epoch; free an older live epoch at once."""
        live = self.sessions.get(session_id)
        if live is None:
            return
        if epoch == live.epoch:
            raise SessionLookupError(
                f"session {session_id} epoch {epoch} is already open", "already_exists"
            )
        if epoch < live.epoch:
            raise SessionLookupError(
                f"session {session_id} is at epoch {live.epoch}; epoch {epoch} is stale",
                "stale_epoch",
            )
        del self.sessions[session_id]
        self.counters["superseded"] += 1
        self._free(live)

    def _admit(self, size: tuple[int, int], memory: MemoryOptions) -> int:
        limits = self.limits
        if min(size) < MIN_PROCESSING_SIDE:
            raise EngineError(
                f"processing size {size[1]}x{size[0]} is below {MIN_PROCESSING_SIDE} px",
                "invalid_size",
            )
        if max(size) > limits.max_processing_side:
            self._refuse(
                "size",
                f"processing size {size[1]}x{size[0]} exceeds the longest side of "
                f"{limits.max_processing_side} px this host accepts; choose a smaller size",
            )
        if memory.max_objects > limits.max_objects:
            self._refuse(
                "objects",
                f"max_objects {memory.max_objects} exceeds this host's limit of "
                f"{limits.max_objects}",
            )
        if memory.max_memory_frames > limits.max_memory_frames:
            self._refuse(
                "memory_frames",
                f"max_memory_frames {memory.max_memory_frames} exceeds this host's limit of "
                f"{limits.max_memory_frames}",
            )
        if len(self.sessions) >= limits.max_sessions:
            self._refuse("sessions", f"{len(self.sessions)} live sessions, the limit of this host")
        need = self.session_bytes(size, memory)
        used = self.reserved_bytes()
        if used + need > limits.budget_bytes:
            self._refuse(
                "budget",
                f"a session at {size[1]}x{size[0]} with up to {memory.max_objects} objects "
                f"needs {need} memory-bank bytes; {used} of {limits.budget_bytes} are reserved",
            )
        return need

    def _refuse(self, reason: str, message: str) -> None:
        self.refusals[reason] += 1
        raise AdmissionError(message)

    def _add(self, session_id, epoch, session, reserved, extra) -> LiveSession:
        now = self.clock()
        live = LiveSession(session_id, epoch, session, reserved, now, now, extra=dict(extra or {}))
        self.sessions[session_id] = live
        return live

    @staticmethod
    def _free(live: LiveSession, locked: bool = False) -> None:
        """Close the engine session; waits for a caller still using it unless ``locked``."""
        if locked:
            try:
                if live.session is not None:
                    live.session.close()
            finally:
                live.lock.release()
            return
        with live.lock:
            if live.session is not None:
                live.session.close()


def _memory_options(options: MemoryOptions | dict | None) -> MemoryOptions:
    if isinstance(options, MemoryOptions):
        return options
    try:
        return MemoryOptions.from_dict(dict(options or {}))
    except (TypeError, ValueError) as exc:
        raise EngineError(f"bad memory options: {exc}") from exc
