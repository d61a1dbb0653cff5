"""A WatchResources client for tests and the bench: the stream read on a thread into a queue."""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from typing import Any

import grpc
from simplu.v1 import resource_pb2, resource_pb2_grpc

from simplu_grpc.interceptors.errors import error_info_of

# How long a test waits for a message it expects before it fails (not a speed assertion).
WAIT_SECONDS = 15.0


class Ended(Exception):
    """The stream ended (its status is ``code``; ``metadata`` is its ErrorInfo's)."""

    def __init__(self, code: grpc.StatusCode, reason: str, metadata: dict[str, str], message: str) -> None:
        super().__init__(f"{code.name} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.metadata = metadata


def ended_by(error: grpc.RpcError) -> Ended:
    from grpc_status import rpc_status

    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    info = error_info_of(status) if status is not None else None
    return Ended(
        error.code(),
        info.reason if info is not None else "",
        dict(info.metadata) if info is not None else {},
        error.details() or "",
    )


class Watcher:
    """One stream; ``next()`` returns the next message or raises ``Ended``."""

    def __init__(
        self,
        stub: resource_pb2_grpc.ResourceServiceStub,
        metadata: Sequence[tuple[str, str | bytes]],
        *,
        business_id: str,
        location_id: str = "main",
        resource_types: Sequence[str] = (),
        resume_token: str = "",
        read: bool = True,
    ) -> None:
        request = resource_pb2.WatchResourcesRequest(
            business_id=business_id,
            location_id=location_id,
            resource_types=list(resource_types),
            resume_token=resume_token,
        )
        self.call: Any = stub.WatchResources(request, metadata=tuple(metadata))
        self._messages: queue.Queue[Any] = queue.Queue()
        self._reading = threading.Event()
        if read:
            self._reading.set()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()
        self.token = ""

    def start_reading(self) -> None:
        self._reading.set()

    def _pump(self) -> None:
        self._reading.wait()
        try:
            for message in self.call:
                self._messages.put(message)
        except grpc.RpcError as exc:
            self._messages.put(ended_by(exc))
        else:
            self._messages.put(Ended(grpc.StatusCode.OK, "", {}, "stream ended"))

    def next(self, timeout: float = WAIT_SECONDS) -> resource_pb2.WatchResourcesResponse:
        try:
            item = self._messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no message within {timeout}s") from None
        if isinstance(item, Ended):
            self._messages.put(item)  # stays ended
            raise item
        self.token = item.resume_token
        return item  # type: ignore[no-any-return]

    def changes(self, count: int, timeout: float = WAIT_SECONDS) -> list[resource_pb2.ResourceChange]:
        found = []
        while len(found) < count:
            message = self.next(timeout)
            if message.HasField("change"):
                found.append(message.change)
        return found

    def ended(self, timeout: float = WAIT_SECONDS) -> Ended:
        """Read until the stream ends; the changes read on the way are in ``self.drained``."""
        self.drained: list[resource_pb2.ResourceChange] = []
        while True:
            try:
                message = self.next(timeout)
            except Ended as end:
                return end
            if message.HasField("change"):
                self.drained.append(message.change)

    def cancel(self) -> None:
        self.call.cancel()
        self._thread.join(WAIT_SECONDS)
