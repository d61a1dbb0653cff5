"""The one page-size rule (AIP-158), for every List/Check RPC of every aggregate.

0 means the RPC's default; a negative size is INVALID_ARGUMENT ("must not be negative"); above
the RPC's maximum is coerced down to it. A top-N limit that must not silently return fewer
than asked (GetTenantUsage) says so with ``reject_above``: then anything outside
0..maximum is INVALID_ARGUMENT ("must be between 0 and <maximum>").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from simplu_grpc.errors import InvalidArgument


@dataclass(frozen=True, slots=True)
class PageSizeRule:
    default: int
    maximum: int
    reject_above: bool = False

    def problem(self, requested: int) -> str | None:
        """What is wrong with ``requested`` (a field violation's description), or None."""
        if self.reject_above:
            return None if 0 <= requested <= self.maximum else f"must be between 0 and {self.maximum}"
        return "must not be negative" if requested < 0 else None

    def size(self, requested: int) -> int:
        """The page size to use for ``requested`` (the default for 0, or for an invalid size
        whose problem was already reported)."""
        return self.default if requested <= 0 else min(requested, self.maximum)

    def resolve(self, requested: int, field: str = "page_size") -> int:
        """The page size to use; INVALID_ARGUMENT on ``field`` when ``requested`` is not allowed."""
        problem = self.problem(requested)
        if problem is not None:
            raise InvalidArgument.field(field, problem)
        return self.size(requested)


# Lists of businesses, resources and changes.
STANDARD: Final = PageSizeRule(default=50, maximum=1000)
