"""What the ResourceService use cases return, and the bounds they are given (document limits,
the response budget)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from simplu_grpc.domain.resources.changes import ResourceChange
from simplu_grpc.domain.resources.model import ResourceKey, StoredResource


@dataclass(frozen=True, slots=True)
class Limits:
    """Document bounds from settings (RESOURCE_DATA_MAX_BYTES / _MAX_DEPTH)."""

    max_bytes: int = 256 * 1024
    max_depth: int = 32


class ResponseBudget(Protocol):
    """Takes the resources of one response until the next would not fit (the transport's
    message size is the servicer's business; the use case only stops where it says)."""

    def admit(self, resource: StoredResource) -> bool:
        """Take ``resource`` into the response; False (taking nothing) when it does not fit."""
        ...


class Unbounded:
    """A budget that takes everything (for callers that have no message limit)."""

    def admit(self, resource: StoredResource) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class Page:
    resources: list[StoredResource]
    next_page_token: str
    # Exact number of matches when cheap to know (see ShardStore.list_page), else None.
    total_size: int | None = None


@dataclass(frozen=True, slots=True)
class ChangePage:
    changes: list[ResourceChange]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class BatchResult:
    found: list[StoredResource]
    missing: list[ResourceKey]
    next_page_token: str = ""
