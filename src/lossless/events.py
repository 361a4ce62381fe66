"""Structured log events: one JSON object per line, one line per lifecycle transition.

Every event has ``event`` (its name), ``ts`` (Unix time), ``pid`` and, once a drain has begun,
``t_plus`` (seconds since t0). Events go to the ``lossless`` logger at INFO (WARNING/ERROR for
forced actions); :func:`configure` installs a JSON-lines handler on stderr for the CLI. Libraries
embedding the middleware keep control of their own logging setup.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

logger = logging.getLogger("lossless")


class JsonFormatter(logging.Formatter):
    """Render records carrying an ``event`` attribute as JSON; others as ``{"msg": ...}``."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = getattr(record, "lossless", None) or {
            "ts": round(record.created, 6),
            "pid": record.process,
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
        }
        return json.dumps(payload, default=str, separators=(",", ":"))


def emit(event: str, level: int = logging.INFO, **fields: Any) -> dict[str, Any]:
    """Log one structured event and return its payload."""
    payload: dict[str, Any] = {"ts": round(time.time(), 6), "pid": os.getpid(), "event": event}
    payload.update({k: v for k, v in fields.items() if v is not None})
    if level >= logging.WARNING:
        payload["level"] = logging.getLevelName(level).lower()
    if logger.isEnabledFor(level):
        # The message is the JSON itself, so handlers the app configured show every field.
        message = json.dumps(payload, default=str, separators=(",", ":"))
        logger.log(level, message, extra={"lossless": payload})
    return payload


_configured = False


def ensure_visible() -> None:
    """Make INFO events reach a handler when the middleware runs outside the CLI (under plain
    uvicorn, hypercorn, granian, a test client): set the ``lossless`` logger to INFO when its
    level was left unset, and install the JSON-lines stderr handler when no handler at all
    would receive its records (the app configured no logging). An app that configured logging
    keeps its handlers; the events reach them as JSON messages. Idempotent."""
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    if not logger.hasHandlers():
        configure()


def configure(stream: Any = None, level: int = logging.INFO) -> None:
    """Send ``lossless`` events to ``stream`` (default stderr) as JSON lines. Idempotent."""
    global _configured
    if _configured:
        return
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    _configured = True
