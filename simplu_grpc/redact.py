"""Secrets in text: the one redaction of logs and answers, and connection strings made safe.

``redact`` scrubs any text before it is logged or answered; ``describe_error`` is the one
way to show an exception to an operator (one line, redacted, bounded). The connection-string helpers
are here too because they share its knowledge of where a password hides in a DSN:
``normalize_dsn`` checks a connection string Citrus sent and percent-encodes a password
holding a raw ``@`` (libpq would split it at the first ``@`` and put the rest of the
password in the host name, and so in its error messages); ``dsn_target`` describes one
without user or password and never raises.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote, unquote

from simplu_grpc.errors import SimpluError

# The password runs to the LAST "@" of the authority, as URL parsers (and Citrus) mean it: a
# raw "@" inside a password must not leave its tail behind.
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^\s'\"]*)@", re.I)
_KV_PASSWORD = re.compile(r"(?P<key>\bpassword\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|\S+)", re.I)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
# RFC 6750 b64token after "Bearer", when it looks like a credential (a digit in it, a "." "_"
# "~" "+" or "/" inside it, or 16+ characters): prose such as "the bearer token is not a JWT",
# "Bearer scheme" or "Bearer <JWT>" in the auth errors' own messages stays readable.
_B64TOKEN = r"[A-Za-z0-9._~+/-]"
_BEARER = re.compile(
    rf"(?i)\b(bearer\s+)(?={_B64TOKEN}*[0-9]|{_B64TOKEN}*[._~+/][A-Za-z0-9]|{_B64TOKEN}{{16}}){_B64TOKEN}+=*"
)
_KV_FIELD = re.compile(r"(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")
_URL_DSN = re.compile(r"(?P<scheme>postgres(?:ql)?://)(?P<authority>[^/?#]*)(?P<rest>.*)", re.I | re.S)
# Passwords of given connection strings are secrets too; a piece shorter than this (of a
# password split at a raw "@") is not worth mangling every other word of a message for.
_MIN_SECRET_PIECE = 4

REDACTED = "***"
# Longest error text shown to an operator: enough for a reason, not for a stack dump.
MAX_ERROR_CHARS = 300
# Each pattern above needs one of these in the text: a JWT starts "eyJ", a bearer credential
# follows "bearer", a URL password comes after "://", a key=value one after "password".
# One scan for them lets text with no secret (nearly every log line) skip the four
# substitutions, which cost tens of microseconds per line: the access log writes one per RPC.
_SECRET_MARKERS = ("eyj", "bearer", "://", "password")  # compared with the lowercased text


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without any secret: each of ``secrets`` (an API key, a configured password, a
    connection string and its password), passwords in URL (``user:pw@``) or key=value
    (``password=pw``) form, anything shaped like a JWT (``[token]``) and bearer credentials."""
    if secrets:
        for secret in sorted(_expand(secrets), key=len, reverse=True):
            text = text.replace(secret, REDACTED)
    lowered = text.lower()
    eyj, bearer, url, password = _SECRET_MARKERS
    if not (eyj in lowered or bearer in lowered or url in lowered or password in lowered):
        return text
    text = _JWT.sub("[token]", text)
    text = _BEARER.sub(rf"\1{REDACTED}", text)
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", text)
    return _KV_PASSWORD.sub(lambda m: f"{m['key']}{REDACTED}", text)


def describe_error(exc: BaseException, secrets: Iterable[str] = ()) -> str:
    """A one-line, secret-free description of ``exc`` for an operator (at most MAX_ERROR_CHARS)."""
    if isinstance(exc, SimpluError):
        text = f"{exc.reason}: {exc.message}"
    else:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    cleaned = redact(" ".join(text.split()), secrets)
    if len(cleaned) > MAX_ERROR_CHARS:
        cleaned = cleaned[: MAX_ERROR_CHARS - 3] + "..."
    return cleaned


def _expand(secrets: Iterable[str]) -> set[str]:
    """The secrets, plus the password of each that is a connection string (raw and decoded)."""
    expanded: set[str] = set()
    for secret in secrets:
        if not secret:
            continue
        expanded.add(secret)
        for password in _dsn_passwords(secret):
            expanded.update({password, unquote(password)})
            expanded.update(piece for piece in password.split("@") if len(piece) >= _MIN_SECRET_PIECE)
    return {s for s in expanded if s}


def _dsn_passwords(dsn: str) -> list[str]:
    found = [m["pw"] for m in _URL_PASSWORD.finditer(dsn)]
    found += [m["pw"].strip("'") for m in _KV_PASSWORD.finditer(dsn)]
    return found


def normalize_dsn(dsn: str) -> str:
    """``dsn`` as libpq should read it; ValueError (never quoting it) when it cannot be used.

    A URL's user and password are percent-encoded where they hold characters libpq would
    misread (a raw ``@`` in the password above all: libpq ends the password at the first
    ``@``, URL parsers at the last); every port must be a number from 1 to 65535. key=value
    conninfo is only checked.
    """
    url = _URL_DSN.fullmatch(dsn.strip())
    if url is None:
        if "://" in dsn:
            raise ValueError("not a postgresql:// URL")
        fields = {key.lower(): value.strip("'") for key, value in _KV_FIELD.findall(dsn)}
        _check_ports(fields.get("port", ""))
        return dsn
    authority = url["authority"]
    userinfo, at, hosts = authority.rpartition("@")
    for hostport in hosts.split(","):
        # "[::1]:5432", "host:5432", "host": the port is what follows the last ":" outside brackets.
        _, _, after_bracket = hostport.rpartition("]")
        if ":" in after_bracket:
            _check_ports(after_bracket.rpartition(":")[2])
    if not at:
        return dsn.strip()
    user, colon, password = userinfo.partition(":")
    encoded = _encode(user) + (f":{_encode(password)}" if colon else "")
    return f"{url['scheme']}{encoded}@{hosts}{url['rest']}"


def _encode(part: str) -> str:
    # Decode first so an already encoded part stays as it was (no double encoding).
    return quote(unquote(part), safe="")


def _check_ports(ports: str) -> None:
    for port in ports.split(","):
        if port == "":
            continue  # libpq's default port
        if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
            raise ValueError("the port is not a number from 1 to 65535")


def dsn_target(dsn: str) -> str:
    """``host:port/dbname`` of a PostgreSQL URL or key=value conninfo, without user or password.

    Total: a malformed connection string gives its best-effort target, never an exception
    (it is called while logging and describing pools, where a bad value must not fail a request).
    """
    url = _URL_DSN.fullmatch(dsn.strip())
    if url is not None:
        hosts = url["authority"].rpartition("@")[2] or "localhost"
        first = hosts.split(",")[0]
        host, _, port = first.rpartition(":") if "]" not in first.rpartition(":")[2] else (first, "", "")
        if not host:
            host, port = first, ""
        path = url["rest"].split("?", 1)[0] or "/"
        return f"{host}:{port or '5432'}{path}"
    fields = dict((m.group(1).lower(), m.group(2).strip("'")) for m in _KV_FIELD.finditer(dsn))
    return f"{fields.get('host', 'localhost')}:{fields.get('port', '5432')}/{fields.get('dbname', '')}"
