"""Inference backends behind one async interface (DESIGN "one engine, two hosts").

``local`` needs the model extra (torch); ``triton`` and everything here are torch-free.
"""

from .base import Backend, BackendError, SessionHandle, StepOutput
from .sync import SyncBackend

__all__ = ["Backend", "BackendError", "SessionHandle", "StepOutput", "SyncBackend"]
