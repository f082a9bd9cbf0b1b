"""Bounds on sessions and session records, in one place (torch-free).

Format limits are constants; the rest is ``SessionLimits``, a frozen dataclass whose
defaults every host uses unless its settings say otherwise (the Triton model's parameters,
the service's settings).
"""

from __future__ import annotations

from dataclasses import dataclass

# Label maps are uint8 with 0 = background: object ids are 1..255 (the indexed-PNG limit).
MAX_OBJECT_ID = 255
# Below this the stride-32 features are a single cell; the graphs need at least that.
MIN_PROCESSING_SIDE = 32
# Results a session keeps for replays: at least as many as a client keeps in flight.
REPLAY_WINDOW = 8


@dataclass(frozen=True)
class SessionLimits:
    """What one inference host admits (DESIGN decision 5)."""

    # Longest side of a processing size (1080p processed at full size; memory grows with it).
    max_processing_side: int = 1920
    # Objects one session may reserve (memory-bank values grow per object).
    max_objects: int = 32
    # Memory-bank capacity in frames (paper: 16; 64 suggested for long videos).
    max_memory_frames: int = 128
    # Live sessions per host.
    max_sessions: int = 64
    # Memory-bank bytes per host (spec 4.1 formula, reserved at open for max_objects).
    budget_bytes: int = 4 << 30
    # Idle sessions are freed after this many seconds (0 = never).
    ttl_s: float = 300.0
    # Decoded size of a session record a host accepts: 16 slots at 1920x1080 fit.
    max_record_bytes: int = 128 << 20
    # A record's JSON header (objects, pins, counters, options) is small; this bounds parsing.
    max_record_header_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        if self.max_processing_side < MIN_PROCESSING_SIDE:
            raise ValueError(f"max_processing_side must be at least {MIN_PROCESSING_SIDE}")
        if not 1 <= self.max_objects <= MAX_OBJECT_ID:
            raise ValueError(f"max_objects must be in 1..{MAX_OBJECT_ID}")
        for name in ("max_memory_frames", "max_sessions", "budget_bytes", "max_record_bytes",
                     "max_record_header_bytes"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if self.ttl_s < 0:
            raise ValueError("ttl_s must be >= 0")


DEFAULT_SESSION_LIMITS = SessionLimits()
