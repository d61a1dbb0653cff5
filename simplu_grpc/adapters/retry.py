"""The retry stop rule adapters share: never sleep into, or start an attempt after, the RPC deadline."""

from __future__ import annotations

import tenacity
from tenacity.stop import stop_base

from simplu_grpc import context

# Below this much time left an attempt cannot do useful work (TCP connect + a small answer).
MIN_ATTEMPT_SECONDS = 0.05


class StopAtDeadline(stop_base):
    """Stop when the next backoff would leave no time for another attempt before the deadline."""

    def __init__(self, deadline: context.Deadline) -> None:
        self._deadline = deadline

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return self._deadline.remaining() <= retry_state.upcoming_sleep + MIN_ATTEMPT_SECONDS
