"""API keys (HTTP and gRPC alike): bearer tokens checked against SHA-256 digests from the
settings, in constant time; the key's name is the caller's identity (``owner``)."""

from __future__ import annotations

import hashlib
import hmac

from isvos.errors import IsvosError
from service.settings import AuthSettings

ANONYMOUS = "anonymous"


def authenticate(auth: AuthSettings, authorization: str | None) -> str:
    """The owner named by ``Authorization: Bearer <token>``; ``anonymous`` when keys are off,
    ``unauthenticated`` when they are on and the token is missing or unknown."""
    if not auth.enabled:
        return ANONYMOUS
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise IsvosError("unauthenticated", "send an API key: 'Authorization: Bearer <key>'")
    digest = hashlib.sha256(token.strip().encode()).hexdigest()
    found = None
    for name, expected in auth.keys.items():  # every key compared: no early exit
        if hmac.compare_digest(digest, expected):
            found = name
    if found is None:
        raise IsvosError("unauthenticated", "the API key is not valid")
    return found
