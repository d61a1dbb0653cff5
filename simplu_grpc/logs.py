"""JSON logs: one object per line with the request's id, method and principal bound per RPC.

``configure_logging(level)`` installs ``JsonFormatter`` on the root logger. Inside an RPC,
every line carries ``request_id``, ``method`` and ``principal`` from request-scoped context
(bound by the access-log interceptor, restored after: pool threads are reused). The access
line adds ``code`` and ``duration_ms``; any ``extra={...}`` fields are kept as they are.
Tokens are never logged: nothing logs them on purpose, and the formatter also masks anything
shaped like a JWT or a bearer credential, and DSN passwords, as a last line of defence.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from simplu_grpc import context as request_context
from simplu_grpc.domain.principal import Principal
from simplu_grpc.redact import redact


@dataclass(slots=True)
class RpcLogContext:
    """What the log knows about the RPC being served on this thread."""

    method: str
    principal: str | None = None


_rpc: ContextVar[RpcLogContext | None] = ContextVar("simplu_rpc_log", default=None)

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
_FIELDS = ("request_id", "method", "principal", "code", "duration_ms")


@contextmanager
def bind_rpc(method: str) -> Iterator[RpcLogContext]:
    """Bind the RPC's method for every log line in the block; restored afterwards."""
    token = _rpc.set(RpcLogContext(method=method))
    try:
        yield _rpc.get() or RpcLogContext(method=method)
    finally:
        _rpc.reset(token)


def note_principal(principal: Principal | None) -> None:
    """Remember who is calling, so the access line written after auth unbinds it still names them."""
    current = _rpc.get()
    if current is not None and principal is not None:
        current.principal = principal.log_name()


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: time, level, logger, message, request fields, extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        entry.update(self._request_fields(record))
        for key, value in record.__dict__.items():
            if key in _STANDARD or key in entry or key.startswith("_") or key in _FIELDS:
                continue
            entry[key] = _plain(value)
        if record.exc_info:
            entry["exception"] = redact("".join(traceback.format_exception(*record.exc_info)))
        elif record.exc_text:
            entry["exception"] = redact(record.exc_text)
        return json.dumps(entry, default=str, ensure_ascii=False)

    @staticmethod
    def _request_fields(record: logging.LogRecord) -> dict[str, Any]:
        rpc = _rpc.get()
        principal = request_context.principal_or_none()
        bound: dict[str, Any] = {
            "request_id": request_context.request_id() or None,
            "method": rpc.method if rpc else None,
            "principal": principal.log_name() if principal else (rpc.principal if rpc else None),
        }
        fields: dict[str, Any] = {}
        for name in _FIELDS:
            value = getattr(record, name, None)
            if value is None:
                value = bound.get(name)
            if value is not None:
                fields[name] = _plain(value)
        return fields


def _plain(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bool | int | float) or value is None:
        return value
    return redact(str(value))


def configure_logging(level: str = "INFO") -> None:
    """Send every logger's records to stderr as JSON lines at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
