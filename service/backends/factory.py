"""The backend a service process runs, from its settings."""

from __future__ import annotations

from service.backends.base import Backend
from service.settings import Settings


def make_backend(settings: Settings) -> Backend:
    """The configured backend (the local one loads the model: it needs the model extra)."""
    b = settings.backend
    if b.kind == "triton":
        from service.backends.triton import TritonBackend

        return TritonBackend(b.triton_urls, failover_after_s=b.triton_failover_s)
    import torch

    from service.backends.local import LocalBackend
    from service.checkpoints import resolve_checkpoint

    if b.threads:
        torch.set_num_threads(b.threads)
    return LocalBackend.from_model(b.config, resolve_checkpoint(b.config, b.checkpoint), b.device)
