"""JSON log lines: one object per line, request context bound per RPC, secrets masked."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest

from simplu_grpc import context as request_context
from simplu_grpc import logs
from simplu_grpc.domain.auth.principal import Principal

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJlLWJ5dGVz"


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("simplu_grpc.test", logging.INFO, __file__, 1, message, args, None)
    made.__dict__.update(extra)
    return made


def as_json(line: logging.LogRecord) -> dict[str, object]:
    parsed: dict[str, object] = json.loads(logs.JsonFormatter().format(line))
    return parsed


def test_a_line_outside_an_rpc_has_the_basic_fields_only() -> None:
    """Outside an RPC a line has time, level, logger and message, and no request fields."""
    entry = as_json(record("hello %s", "world"))
    assert entry.keys() == {"time", "level", "logger", "message"}
    assert entry["message"] == "hello world"
    assert entry["level"] == "INFO"
    assert str(entry["time"]).endswith("+00:00")


def test_request_fields_come_from_the_bound_rpc_context() -> None:
    """Inside an RPC every line carries request id, method and the principal's log name."""
    principal = Principal(subject="s-1", username="ana", token_use="access", client_id="c")
    with (
        request_context.bind(request_id="r-1", principal=principal),
        logs.bind_rpc("/simplu.v1.X/Get"),
    ):
        entry = as_json(record("working", shard="shard-01"))
    assert entry["request_id"] == "r-1"
    assert entry["method"] == "/simplu.v1.X/Get"
    assert entry["principal"] == "user:s-1"
    assert entry["shard"] == "shard-01"
    assert as_json(record("after")).keys() == {"time", "level", "logger", "message"}


def test_the_principal_noted_inside_survives_unbinding() -> None:
    """A principal noted during the RPC is still named after the auth binding is gone."""
    machine = Principal(subject="app", username="", token_use="access", client_id="app")
    with logs.bind_rpc("/m") as rpc:
        with request_context.bind(principal=machine):
            logs.note_principal(request_context.principal_or_none())
        assert rpc.principal == "client:app"
        assert as_json(record("done"))["principal"] == "client:app"


def test_tokens_and_passwords_are_masked_everywhere() -> None:
    """JWTs, bearer credentials and DSN passwords are masked in messages, extras and tracebacks."""
    try:
        raise ValueError(f"bad token {JWT}")
    except ValueError:
        failing = record("auth header was Bearer abc.def.ghi for %s", "postgresql://u:pw9@h/db", note=JWT)
        failing.exc_info = sys.exc_info()
    line = logs.JsonFormatter().format(failing)
    for secret in (JWT, "abc.def.ghi", "pw9"):
        assert secret not in line
    entry = json.loads(line)
    assert "ValueError" in entry["exception"]
    assert entry["note"] == "[token]"


@pytest.fixture
def restored_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_configure_logging_writes_json_lines_to_stderr(
    restored_root: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After configure_logging every record is one JSON line on stderr at the chosen level."""
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    logs.configure_logging("warning")
    logging.getLogger("simplu_grpc.any").info("hidden")
    logging.getLogger("simplu_grpc.any").warning("shown %d", 1)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["message"] == "shown 1"
