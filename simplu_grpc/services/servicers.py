"""Registering a simplu.v1 service so that an undecodable request is INVALID_ARGUMENT.

grpcio's generated ``add_*_to_server`` answers a request protobuf cannot parse with INTERNAL
("Exception deserializing request!"), outside the interceptors. A Struct nested past the
parser's depth limit (ResourceService ``data``, BusinessService ``settings.extras``) is such
a request: the caller's mistake, refused before any validation could run. Registered here,
the request is parsed tolerantly and an undecodable one becomes INVALID_ARGUMENT (through the
interceptors, with a field violation naming the request) for every method of the service.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError

from simplu_grpc.errors import InvalidArgument

# The field a violation names: the request as a whole (protobuf does not say where it failed).
REQUEST_FIELD = "request"


class _Undecodable:
    """Stands in for a request protobuf could not parse (e.g. a Struct nested past its depth limit)."""

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name


def _tolerant_parser(message_class: Any) -> Callable[[bytes], Any]:
    def parse(raw: bytes) -> Any:
        try:
            return message_class.FromString(raw)
        except DecodeError:
            return _Undecodable(message_class.DESCRIPTOR.full_name)

    return parse


def _refusing_undecodable(behavior: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[..., Any]:
    def handle(request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, _Undecodable):
            raise InvalidArgument.field(
                REQUEST_FIELD,
                f"the {request.type_name} cannot be decoded (a Struct nested too deeply, or malformed bytes)",
            )
        return behavior(request, context)

    return handle


def add_service(service: ServiceDescriptor, servicer: Any, server: grpc.Server) -> None:
    """Like the generated ``add_<Service>Servicer_to_server`` for ``service`` (every simplu.v1
    method is unary-unary), but an undecodable request is INVALID_ARGUMENT, not INTERNAL."""
    handlers = {}
    for method in service.methods:
        if method.client_streaming or method.server_streaming:
            raise ValueError(f"{method.full_name} streams; only unary methods are supported")
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            _refusing_undecodable(getattr(servicer, method.name)),
            request_deserializer=_tolerant_parser(request_class),
            response_serializer=response_class.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)
