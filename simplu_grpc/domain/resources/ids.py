"""Resource ids: the accepted shapes (checks) and the server-generated ones.

Server-generated resource ids: time-sortable and collision-free (ULID layout), never MAX+1.

26 characters of Crockford base32: a 48-bit millisecond timestamp then 80 random bits.
Ids sort (as strings) in creation order; within one millisecond the generator increments
the random part, so ids from one process are strictly increasing, and two processes
collide only if they draw the same 80 random bits in the same millisecond.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections.abc import Callable
from typing import Final

from simplu_grpc.errors import InvalidArgument

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS = 80
_RANDOM_MAX = (1 << _RANDOM_BITS) - 1
_TIME_MAX = (1 << 48) - 1
ID_LENGTH = 26


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


class IdGenerator:
    """Thread-safe generator of ULID-like ids; ``clock`` returns milliseconds (tests inject one)."""

    def __init__(
        self,
        *,
        clock: Callable[[], int] | None = None,
        randbits: Callable[[int], int] = secrets.randbits,
    ) -> None:
        self._clock = clock or (lambda: time.time_ns() // 1_000_000)
        self._randbits = randbits
        self._lock = threading.Lock()
        self._last_ms = -1
        self._last_random = 0

    def new_id(self) -> str:
        with self._lock:
            now = self._clock()
            if now <= self._last_ms:
                # Same millisecond (or the wall clock stepped back): keep the last timestamp
                # and increment, so ids stay strictly increasing within this process.
                now = self._last_ms
                random_part = self._last_random + 1
                if random_part > _RANDOM_MAX:
                    now += 1
                    random_part = self._randbits(_RANDOM_BITS) >> 1
            else:
                # Top bit left clear so ~2**79 increments fit before overflow.
                random_part = self._randbits(_RANDOM_BITS) >> 1
            if now > _TIME_MAX:
                raise OverflowError("timestamp does not fit in 48 bits")
            self._last_ms = now
            self._last_random = random_part
        return _encode(now, 10) + _encode(random_part, 16)


def id_timestamp_ms(resource_id: str) -> int:
    """The millisecond timestamp encoded in a generated id (for tests and debugging)."""
    value = 0
    for char in resource_id[:10].upper():
        value = value * 32 + _ALPHABET.index(char)
    return value


_default = IdGenerator()


def new_resource_id() -> str:
    """A fresh id from the process-wide generator."""
    return _default.new_id()


ID_PATTERN: Final = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
# Business ids never contain "-": the Citrus key "{businessId}-{locationId}" splits at its first "-".
BUSINESS_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9_.:]{1,64}")
REQUEST_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9_.:-]{1,128}")

# --- id checks -----------------------------------------------------------------------------


def require_id(field_name: str, value: str, *, business: bool = False) -> str:
    """A 1-64 character id of [A-Za-z0-9_.:-] (no "-" for business ids)."""
    if not value:
        raise InvalidArgument.field(field_name, "is required")
    pattern = BUSINESS_ID_PATTERN if business else ID_PATTERN
    if not pattern.fullmatch(value):
        allowed = "[A-Za-z0-9_.:]" if business else "[A-Za-z0-9_.:-]"
        raise InvalidArgument.field(field_name, f"must be 1-64 characters of {allowed}")
    return value


def optional_request_id(value: str) -> str | None:
    if not value:
        return None
    if not REQUEST_ID_PATTERN.fullmatch(value):
        raise InvalidArgument.field("request_id", "must be 1-128 characters of [A-Za-z0-9_.:-]")
    return value
