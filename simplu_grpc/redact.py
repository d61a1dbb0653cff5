"""Redaction of secrets (connection-string passwords, tokens, API keys) before logging or answering."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]*)@", re.I)
_KV_PASSWORD = re.compile(r"(?P<key>\bpassword\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|\S+)", re.I)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
# RFC 6750 b64token after "Bearer": masks credentials, not the "Bearer <JWT>" or "Bearer scheme"
# of the auth interceptor's own error messages.
_BEARER = re.compile(r"(?i)\b(bearer\s+)(?!scheme\b)[A-Za-z0-9._~+/-]+=*")

REDACTED = "***"
# Each pattern above needs one of these in the text: a JWT starts "eyJ", a bearer credential
# follows "bearer", a URL password comes after "://", a key=value one after "password".
# One scan for them lets text with no secret (nearly every log line) skip the four
# substitutions, which cost tens of microseconds per line: the access log writes one per RPC.
_SECRET_MARKERS = ("eyj", "bearer", "://", "password")  # compared with the lowercased text


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without any secret: each of ``secrets`` (an API key, a configured password),
    passwords in URL (``user:pw@``) or key=value (``password=pw``) form, anything shaped like
    a JWT (``[token]``) and bearer credentials."""
    if secrets:
        for secret in sorted((s for s in secrets if s), key=len, reverse=True):
            text = text.replace(secret, REDACTED)
    lowered = text.lower()
    eyj, bearer, url, password = _SECRET_MARKERS
    if not (eyj in lowered or bearer in lowered or url in lowered or password in lowered):
        return text
    text = _JWT.sub("[token]", text)
    text = _BEARER.sub(rf"\1{REDACTED}", text)
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
