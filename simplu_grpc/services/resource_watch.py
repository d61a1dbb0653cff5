"""WatchResources on the wire: the request opens a ``domain.watch_ops.Watch``, whose events
become ``WatchResourcesResponse`` messages.

``open`` runs before the first message (validation, permission, resume token): an outsider's
PERMISSION_DENIED ends the call before anything is streamed. Errors raised later (a permission
lost, a slow reader, the server stopping) end the stream through the error-mapping interceptor
with their ErrorInfo, whose metadata carries the resume token.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from simplu.v1 import resource_pb2

from simplu_grpc.domain.resources.changes import ResourceChange
from simplu_grpc.domain.resources.model import StoredResource
from simplu_grpc.domain.watch_ops import WatchOps
from simplu_grpc.errors import Unavailable

FillChange = Callable[[resource_pb2.ResourceChange, ResourceChange], None]
FillResource = Callable[[resource_pb2.Resource, StoredResource], None]


def watch_resources(
    ops: WatchOps,
    request: resource_pb2.WatchResourcesRequest,
    *,
    changes: FillChange,
    resources: FillResource,
    on_end: Callable[[Callable[[], None]], object],
) -> Iterator[resource_pb2.WatchResourcesResponse]:
    """Open the watch now (so its errors come before any message); the messages when iterated.
    ``on_end`` (``context.add_callback``) wakes the stream when the caller goes away."""
    watch = ops.open(
        business_id=request.business_id,
        location_id=request.location_id,
        resource_types=list(request.resource_types),
        resume_token=request.resume_token,
    )

    def ended() -> None:
        watch.interrupt(Unavailable("the call ended", reason="WATCH_INTERRUPTED"))
        watch.release()

    on_end(ended)

    def responses() -> Iterator[resource_pb2.WatchResourcesResponse]:
        for item, token in watch:
            response = resource_pb2.WatchResourcesResponse(resume_token=token)
            if item is not None:
                changes(response.change, item.change)
                if item.resource is not None:
                    resources(response.change.resource, item.resource)
            yield response

    return responses()
