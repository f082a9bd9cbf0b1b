"""Errors raised by the media layer for bad user input (codes: ``isvos.errors.ERRORS``)."""

from __future__ import annotations

from isvos.errors import IsvosError


class MediaError(IsvosError, ValueError):
    """A problem with user-supplied media; ``code`` is stable, the message is for humans.

    The message says what is wrong and what to do about it.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
