"""Structured logging: one JSON object per line on stdout, carrying the correlation id and
the event being handled (taken from context variables the bus and the HTTP middleware set).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

#: Fields that travel with the current request or message into every log line.
_context: ContextVar[Mapping[str, Any]] = ContextVar("eventshop_log_context", default={})  # noqa: B039

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}
# Never let these reach a log line, whoever passes them in ``extra``.
_REDACTED = {"password", "password_hash", "hash", "token", "access_token", "authorization"}


def log_context() -> Mapping[str, Any]:
    return _context.get()


def correlation_id() -> str | None:
    value = _context.get().get("correlationid")
    return str(value) if value else None


@contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Add fields to every log line written inside the block (and in tasks it starts)."""
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def bind_forever(**fields: Any) -> None:
    """Bind fields for the rest of the current context (used for ``service`` at start-up)."""
    _context.set({**_context.get(), **fields})


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = dict(_context.get())
    for key, value in record.__dict__.items():
        if key not in _STANDARD and not key.startswith("_"):
            out[key] = value
    for key in _REDACTED & out.keys():
        out[key] = "[redacted]"
    return out


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_fields(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S.%f")[:-3]
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items() if k != "service")
        line = f"{ts} {record.levelname:<7} {record.getMessage()}"
        if extra:
            line += f"  [{extra}]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    """Route all logging (ours, uvicorn's, aio-pika's) to stdout in the chosen format."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # aio-pika and aiormq log every reconnect attempt with a traceback at WARNING; ours say
    # it once, in plain words.
    for noisy in ("aio_pika", "aiormq", "pymongo"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    bind_forever(service=service)
