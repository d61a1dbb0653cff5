"""One abstract ``intercept`` for every kind of RPC, after grpc-interceptor's ServerInterceptor.

grpcio's own hook (``intercept_service``) only sees the method name and metadata, before the
request exists and outside the worker thread. Wrapping the handler's behaviour instead lets an
interceptor run in the thread that serves the call, see the request and the context, and bind
request-scoped context variables that the servicer will see.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, TypeAlias

import grpc

Behavior = Callable[[Any, grpc.ServicerContext], Any]
# A string: grpc's runtime class takes no type parameters (only types-grpcio's stub does).
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class ServerInterceptor(grpc.ServerInterceptor, abc.ABC):
    """Subclasses implement ``intercept``; call ``method(request, context)`` to continue."""

    @abc.abstractmethod
    def intercept(
        self,
        method: Behavior,
        request_or_iterator: Any,
        context: grpc.ServicerContext,
        method_name: str,
    ) -> Any:
        """Run around one RPC; return what ``method`` returns (or abort the context)."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method_name: str = handler_call_details.method
        # grpc asks on every call; the registered handlers never change, so each (method,
        # inner handler) is wrapped once. Keyed by identity, the entry keeps the inner
        # handler alive so its id cannot be reused; a dict is safe across grpc's threads.
        cache: dict[tuple[str, int], tuple[Handler, Handler]] = self.__dict__.setdefault(
            "_wrapped_handlers", {}
        )
        key = (method_name, id(handler))
        found = cache.get(key)
        if found is not None and found[0] is handler:
            return found[1]
        factory, behavior = _factory_and_behavior(handler)

        def wrapped(request_or_iterator: Any, context: grpc.ServicerContext) -> Any:
            return self.intercept(behavior, request_or_iterator, context, method_name)

        # A behaviour with threads of its own (health checks) keeps them when wrapped.
        own_threads = getattr(behavior, "experimental_thread_pool", None)
        if own_threads is not None:
            # grpc reads this attribute off the behaviour function; mypy knows no such attribute.
            wrapped.experimental_thread_pool = own_threads  # type: ignore[attr-defined]

        # grpc's handler factories are typed loosely in types-grpcio; the result is a handler.
        made: Handler = factory(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        cache[key] = (handler, made)
        return made


def _factory_and_behavior(handler: grpc.RpcMethodHandler[Any, Any]) -> tuple[Callable[..., Any], Behavior]:
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler, handler.unary_unary
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler, handler.unary_stream
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler, handler.stream_unary
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler, handler.stream_stream
    raise RuntimeError("RPC method handler has no behaviour")
