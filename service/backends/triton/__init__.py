"""The ``triton`` backend (sessions on a Triton server); ``client`` holds the recovery logic,
``wire`` the request and response encoding."""

from .client import TritonBackend
from .wire import masks_to_wire

__all__ = ["TritonBackend", "masks_to_wire"]
