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
from contextvars import ContextVar, Token
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from simplu_grpc import context as request_context
from simplu_grpc.domain.auth.principal import Principal
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


class bind_rpc:  # noqa: N801 - used as a function: ``with logs.bind_rpc(method) as rpc``
    """Bind the RPC's method for every log line in the block; restored afterwards.

    A class rather than a ``@contextmanager`` generator: it is entered on every RPC.
    """

    __slots__ = ("_context", "_token")

    def __init__(self, method: str) -> None:
        self._context = RpcLogContext(method=method)
        self._token: Token[RpcLogContext | None] | None = None

    def __enter__(self) -> RpcLogContext:
        self._token = _rpc.set(self._context)
        return self._context

    def __exit__(self, *_exc: object) -> None:
        if self._token is not None:
            _rpc.reset(self._token)


def note_principal(principal: Principal | None) -> None:
    """Remember who is calling, so the access line written after auth unbinds it still names them."""
    current = _rpc.get()
    if current is not None and principal is not None:
        current.principal = principal.log_name()


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: time, level, logger, message, request fields, extras."""

    def format(self, record: logging.LogRecord) -> str:
        # Written for speed as much as for clarity: the access log formats one line per RPC.
        entry: dict[str, Any] = {
            "time": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        attributes = record.__dict__
        rpc = _rpc.get()
        for name in _FIELDS:
            value = attributes.get(name)
            if value is None:
                value = _bound(name, rpc)
            if value is not None:
                entry[name] = _plain(value)
        for key, value in attributes.items():
            if key in _STANDARD or key in entry or key in _FIELDS or key.startswith("_"):
                continue
            entry[key] = _plain(value)
        if record.exc_info:
            entry["exception"] = redact("".join(traceback.format_exception(*record.exc_info)))
        elif record.exc_text:
            entry["exception"] = redact(record.exc_text)
        return json.dumps(entry, default=str, ensure_ascii=False)


def _bound(name: str, rpc: RpcLogContext | None) -> Any:
    """A request field from the bound RPC context (None outside an RPC or when unset)."""
    if name == "request_id":
        return request_context.request_id() or None
    if name == "method":
        return rpc.method if rpc else None
    if name == "principal":
        principal = request_context.principal_or_none()
        return principal.log_name() if principal else (rpc.principal if rpc else None)
    return None


_last_second: tuple[int, str] = (-1, "")


def _timestamp(created: float) -> str:
    """ISO 8601 UTC with milliseconds; the part up to the second is reused within a second."""
    global _last_second  # noqa: PLW0603 - a one-entry cache, replaced whole (no torn reads)
    second = int(created)
    cached = _last_second
    if cached[0] != second:
        cached = (second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
        _last_second = cached
    return f"{cached[1]}.{int((created - second) * 1000):03d}+00:00"


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
    # The JSON lines name neither source file, thread nor process: don't make every record
    # walk the stack or look them up (the logging docs' "Optimization" section; the access
    # log writes a record per RPC).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
