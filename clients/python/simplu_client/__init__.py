"""Channel settings for calling the Simplu API: balancing, keepalive and safe retries.

``channel(target)`` returns a channel that balances calls over every address the target
resolves to (use a headless Kubernetes Service, ``dns:///simplu-grpc-headless:50051``), keeps
idle connections alive, and lets gRPC retry the calls that are safe to retry: reads on
UNAVAILABLE or RESOURCE_EXHAUSTED, with backoff. Writes are never retried here: an
UNAVAILABLE write may have committed (reason COMMIT_OUTCOME_UNKNOWN), so the caller retries a
create with the same ``request_id`` and an update with its ``etag``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import grpc

__all__ = ["READ_METHODS", "channel", "channel_options", "service_config"]

# Methods that change nothing: retrying them can only cost time.
READ_METHODS: dict[str, tuple[str, ...]] = {
    "simplu.v1.ResourceService": ("GetResource", "BatchGetResources", "ListResources", "ListResourceTypes"),
    "simplu.v1.BusinessService": ("GetBusiness", "ListBusinesses", "GetMyAccess"),
}


def service_config(
    *, max_attempts: int = 3, initial_backoff: float = 0.1, max_backoff: float = 1.0
) -> dict[str, Any]:
    """The gRPC service config: round robin, and retries of reads on transient codes."""
    return {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [
                    {"service": service, "method": method}
                    for service, methods in READ_METHODS.items()
                    for method in methods
                ],
                "retryPolicy": {
                    "maxAttempts": max_attempts,
                    "initialBackoff": f"{initial_backoff}s",
                    "maxBackoff": f"{max_backoff}s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"],
                },
            }
        ],
    }


def channel_options(
    *, keepalive_seconds: float = 30.0, max_receive_bytes: int = 4 * 1024 * 1024
) -> list[tuple[str, Any]]:
    """Options for ``grpc.insecure_channel`` / ``grpc.secure_channel``.

    Keepalive pings every ``keepalive_seconds`` while calls are in flight only (the server
    refuses clients that ping idle connections more often than every 10 s). 4 MiB is gRPC's
    default receive limit; the server keeps List/BatchGet responses under 3 MiB.
    """
    return [
        ("grpc.service_config", json.dumps(service_config())),
        ("grpc.enable_retries", 1),
        ("grpc.keepalive_time_ms", int(keepalive_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.max_receive_message_length", max_receive_bytes),
    ]


def channel(
    target: str,
    *,
    credentials: grpc.ChannelCredentials | None = None,
    extra_options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel:
    """A channel to ``target`` with ``channel_options()``; TLS when ``credentials`` are given."""
    options = [*channel_options(), *extra_options]
    if credentials is None:
        return grpc.insecure_channel(target, options=options)
    return grpc.secure_channel(target, credentials, options=options)
