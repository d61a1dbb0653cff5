"""A business's domain label: the ``{label}`` of its public booking site ``{label}.simplu...``.

A label is one DNS label (RFC 1035 letters-digits-hyphen), narrowed so it is safe as a
subdomain of ours: 3-63 characters of ``a-z 0-9 -``, starting with a letter, not ending with
``-``, no ``--`` (``xn--`` and friends are IDN encodings, which would let one label look like
another), and none of the names the platform keeps for itself. DNS is case-insensitive, so
labels are compared and stored lower case.
"""

from __future__ import annotations

import re
from typing import Final

from simplu_grpc.domain.checks import Violations

LABEL_PATTERN: Final = re.compile(r"[a-z][a-z0-9-]{1,61}[a-z0-9]")
# Names of the platform's own hosts, and ones that would mislead a visitor.
RESERVED_LABELS: Final = frozenset(
    {
        "admin",
        "api",
        "app",
        "auth",
        "billing",
        "book",
        "booking",
        "cdn",
        "dashboard",
        "dev",
        "docs",
        "help",
        "login",
        "mail",
        "simplu",
        "staging",
        "static",
        "status",
        "support",
        "test",
        "www",
    }
)


def normalized(label: str) -> str:
    """The stored form of ``label``: lower case, outer spaces removed."""
    return label.strip().lower()


def label_problem(label: str) -> str | None:
    """Why ``label`` (already normalized) cannot be a domain label; None when it can."""
    if not LABEL_PATTERN.fullmatch(label):
        return "must be 3-63 characters of a-z, 0-9 and '-', start with a letter and not end with '-'"
    if "--" in label:
        return "must not contain '--' (reserved for internationalized names)"
    if label in RESERVED_LABELS:
        return f"{label!r} is reserved"
    return None


def check_domain_label(v: Violations, field: str, label: str) -> str:
    """The normalized label, a violation recorded when it is not valid (empty is valid: none)."""
    value = normalized(label)
    if value:
        problem = label_problem(value)
        if problem is not None:
            v.add(field, problem)
    return value
