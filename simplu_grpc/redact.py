"""Redaction of secrets (connection-string passwords, API keys) before anything is logged or returned."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]*)@", re.I)
_KV_PASSWORD = re.compile(r"(?P<key>\bpassword\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|\S+)", re.I)

REDACTED = "***"


def redact(text: str) -> str:
    """Replace every password in URL (``user:pw@``) or key=value (``password=pw``) form."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", text)
    return _KV_PASSWORD.sub(lambda m: f"{m['key']}{REDACTED}", text)


def dsn_target(dsn: str) -> str:
    """``host:port/dbname`` of a PostgreSQL URL or key=value conninfo, without user or password."""
    if "://" in dsn:
        parts = urlsplit(dsn)
        host = parts.hostname or "localhost"
        port = parts.port or 5432
        return f"{host}:{port}{parts.path or '/'}"
    fields = dict(
        (m.group(1).lower(), m.group(2).strip("'"))
        for m in re.finditer(r"(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", dsn)
    )
    return f"{fields.get('host', 'localhost')}:{fields.get('port', '5432')}/{fields.get('dbname', '')}"
