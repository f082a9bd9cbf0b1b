"""Structured logs: one JSON object per line, with the job id as ``trace_id``."""

from __future__ import annotations

import json
import logging
import sys
import time

# Attributes every LogRecord has; anything else passed in ``extra`` is an event field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(level: str = "info", stream=None) -> None:
    """JSON lines on stderr for the service's loggers (``isvos.*``) and uvicorn's."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("isvos", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False
    logging.getLogger("uvicorn.access").disabled = True  # the gateway logs requests itself


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields) -> None:
    """Log ``event`` with ``fields`` as JSON members (``trace_id`` for a job's events)."""
    fields.setdefault("event", event)
    # Names a LogRecord has itself (message, args, ...) would clash: they get a suffix.
    extra = {(f"{k}_" if k in _STANDARD else k): v for k, v in fields.items()}
    logger.log(level, event, extra={"when": time.time(), **extra})
