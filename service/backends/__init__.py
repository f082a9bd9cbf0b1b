"""Inference backends behind one interface (DESIGN "one engine, two hosts")."""

from .base import Backend, BackendError, SessionHandle, StepOutput

__all__ = ["Backend", "BackendError", "SessionHandle", "StepOutput"]
