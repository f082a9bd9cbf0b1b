"""Which Triton server takes a session: the endpoints, their load, and the ones to avoid.

A session's memory bank lives in one Triton process, so a session is placed once (the
least-loaded server by its ``stats``: live sessions, then reserved memory-bank bytes) and
stays there; it moves only when that server is gone or has lost it (``TritonBackend``
re-primes it elsewhere from its record). Targets are ``HOST:PORT`` or ``dns:///NAME:PORT``,
a name resolved to every address it has (a Kubernetes headless Service: one per pod),
resolved again every ``resolve_every_s``. Servers that are draining, not reachable or
marked down after a failure are skipped. Torch-free.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import tritonclient.grpc.aio as aiogrpcclient

from ..base import BackendError

DNS_PREFIX = "dns:///"


@dataclass
class _Load:
    """What a server said of itself in its last ``stats`` answer."""

    sessions: int
    reserved_bytes: int
    budget_bytes: int
    draining: bool
    checked_at: float


class Endpoints:
    """The Triton servers of one backend, with a client per server and what each reports."""

    def __init__(
        self,
        targets: list[str],
        stats_of: Callable[[str], Awaitable[dict]],
        *,
        stats_ttl_s: float = 1.0,
        down_for_s: float = 10.0,
        resolve_every_s: float = 10.0,
        stats_timeout_s: float = 3.0,
    ) -> None:
        if not targets:
            raise ValueError("at least one Triton endpoint is needed")
        self.targets = list(targets)
        self.stats_of = stats_of
        self.stats_ttl_s = stats_ttl_s
        self.down_for_s = down_for_s
        self.resolve_every_s = resolve_every_s
        self.stats_timeout_s = stats_timeout_s
        self._resolved: list[str] = []
        self._resolved_at = float("-inf")
        self._clients: dict[str, object] = {}
        self._loads: dict[str, _Load] = {}
        self._placed: dict[str, int] = {}  # sessions placed here since its last stats
        self._down_until: dict[str, float] = {}

    @property
    def several(self) -> bool:
        """More than one server may hold a session (a list, or a name to resolve)."""
        return len(self.targets) > 1 or any(t.startswith(DNS_PREFIX) for t in self.targets)

    # ------------------------------------------------------------------ addresses

    def urls(self) -> list[str]:
        """Every server's ``HOST:PORT``, names resolved (cached for ``resolve_every_s``)."""
        now = time.monotonic()
        if now - self._resolved_at >= self.resolve_every_s or not self._resolved:
            resolved = []
            for target in self.targets:
                for url in _resolve(target):
                    if url not in resolved:
                        resolved.append(url)
            if resolved:  # a failed lookup keeps the last good answer
                self._resolved, self._resolved_at = resolved, now
        return list(self._resolved)

    def client(self, url: str):
        """The gRPC client of ``url`` (created on first use, inside the running loop)."""
        client = self._clients.get(url)
        if client is None:
            client = self._clients[url] = aiogrpcclient.InferenceServerClient(url)
        return client

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.close()

    # ------------------------------------------------------------------ placement

    def mark_down(self, url: str) -> None:
        """Skip ``url`` for new sessions for ``down_for_s`` (it failed a session's call)."""
        self._down_until[url] = time.monotonic() + self.down_for_s
        self._loads.pop(url, None)

    def is_down(self, url: str) -> bool:
        return self._down_until.get(url, 0.0) > time.monotonic()

    async def choose(self, exclude: set[str] | frozenset[str] = frozenset()) -> str:
        """The least-loaded server that can take a session now; ``unavailable`` if none."""
        urls = self.urls()
        if not urls:
            raise BackendError("unavailable", f"no Triton server found at {self.targets}")
        if not self.several:
            return urls[0]
        candidates = [u for u in urls if u not in exclude and not self.is_down(u)]
        if not candidates:  # every server failed recently: try the ones not excluded
            candidates = [u for u in urls if u not in exclude]
        reasons: dict[str, str] = {}
        await asyncio.gather(*(self._refresh(u, reasons) for u in candidates))
        loads = {u: self._loads[u] for u in candidates if u in self._loads}
        usable = {u: load for u, load in loads.items() if not load.draining}
        reasons.update({u: "draining" for u, load in loads.items() if load.draining})
        if not usable:
            said = ", ".join(f"{u}: {why}" for u, why in sorted(reasons.items())) or "none listed"
            raise BackendError("unavailable", f"no Triton server can take a session ({said})")

        def load(url: str) -> tuple[float, float]:
            entry = usable[url]
            sessions = entry.sessions + self._placed.get(url, 0)
            return sessions, entry.reserved_bytes / max(entry.budget_bytes, 1)

        chosen = min(usable, key=load)
        self._placed[chosen] = self._placed.get(chosen, 0) + 1
        return chosen

    async def _refresh(self, url: str, reasons: dict[str, str]) -> None:
        known = self._loads.get(url)
        if known is not None and time.monotonic() - known.checked_at < self.stats_ttl_s:
            return
        try:
            stats = await asyncio.wait_for(self.stats_of(url), self.stats_timeout_s)
        except (BackendError, TimeoutError) as exc:
            reasons[url] = getattr(exc, "message", None) or "no answer to stats"
            self._loads.pop(url, None)
            return
        self._loads[url] = _Load(
            int(stats.get("sessions", 0)), int(stats.get("reserved_bytes", 0)),
            int(stats.get("budget_bytes", 1)), bool(stats.get("draining", False)),
            time.monotonic(),
        )  # fmt: skip
        self._placed[url] = 0
        self._down_until.pop(url, None)


def _resolve(target: str) -> list[str]:
    """``HOST:PORT`` as is; ``dns:///NAME:PORT`` to one ``ADDRESS:PORT`` per address."""
    if not target.startswith(DNS_PREFIX):
        return [target]
    name, _, port = target[len(DNS_PREFIX) :].rpartition(":")
    if not name or not port.isdigit():
        raise ValueError(f"Triton endpoint {target!r} is not dns:///NAME:PORT")
    try:
        infos = socket.getaddrinfo(name, int(port), type=socket.SOCK_STREAM)
    except socket.gaierror:
        return []
    urls = []
    for family, *_, address in infos:
        host = f"[{address[0]}]" if family == socket.AF_INET6 else address[0]
        url = f"{host}:{port}"
        if url not in urls:
            urls.append(url)
    return sorted(urls)
