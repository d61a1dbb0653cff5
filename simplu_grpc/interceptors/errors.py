"""Error mapping: domain errors become gRPC statuses with ``google.rpc.Status`` details.

The innermost interceptor. Every ``SimpluError`` a servicer raises becomes its status code
with an ``ErrorInfo`` (reason, domain ``simplu.api``, metadata), a ``RetryInfo`` on the codes
worth retrying (UNAVAILABLE, RESOURCE_EXHAUSTED, ABORTED) and, for ``InvalidArgument``, a
``BadRequest`` listing each bad field. A reason that is not in the proto's ``ErrorReason`` is
never sent: that error is logged and answered as INTERNAL. Anything else becomes
INTERNAL with a generic message that carries only the request id; the traceback goes to
the log. An RPC that already chose its status (``context.abort``, which raises, or
``context.set_code``) passes through untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from simplu_grpc import context as request_context
from simplu_grpc.errors import ERROR_DOMAIN, REASONS, InvalidArgument, SimpluError
from simplu_grpc.interceptors.base import Behavior, ServerInterceptor
from simplu_grpc.redact import redact

_log = logging.getLogger(__name__)

# Where grpc-status (and every gRPC client library) looks for google.rpc.Status.
_DETAILS_KEY = "grpc-status-details-bin"

Metadata = tuple[tuple[str, str | bytes], ...]


@dataclass(frozen=True)
class RichStatus(grpc.Status):
    """A status ready for ``context.abort_with_status``: code, message, trailing metadata."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: Metadata


def sendable(err: SimpluError) -> SimpluError:
    """``err``, or an INTERNAL error when its reason is not one the contract lists (logged)."""
    if err.reason in REASONS:
        return err
    _log.error(
        "refused to send reason %r (not in simplu.v1.ErrorReason) with %s: %s",
        err.reason,
        err.code.name,
        err.message,
    )
    return _internal_error()


def _internal_error() -> SimpluError:
    request_id = request_context.request_id() or "unknown"
    return SimpluError(f"internal error (request id {request_id})")


def rich_status_proto(err: SimpluError) -> Any:
    """The ``google.rpc.Status`` message describing ``err`` (ErrorInfo, RetryInfo, BadRequest)."""
    err = sendable(err)
    message = redact(err.message)  # defence in depth: messages are written never to hold secrets
    status = status_pb2.Status(code=err.code.value[0], message=message)
    info = error_details_pb2.ErrorInfo(reason=err.reason, domain=ERROR_DOMAIN, metadata=err.metadata)
    _pack(status, info)
    delay = err.retry_delay
    if delay is not None:
        retry_delay = duration_pb2.Duration()
        retry_delay.FromTimedelta(delay)
        _pack(status, error_details_pb2.RetryInfo(retry_delay=retry_delay))
    if isinstance(err, InvalidArgument) and err.violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in err.violations
            ]
        )
        _pack(status, bad_request)
    return status


def to_status(err: SimpluError) -> grpc.Status:
    """The gRPC status for ``err``: its code, its message, and the rich details as trailing metadata."""
    err = sendable(err)  # the code below must be the one the details describe
    proto = rich_status_proto(err)
    return RichStatus(
        code=err.code,
        details=proto.message,
        trailing_metadata=((_DETAILS_KEY, proto.SerializeToString()),),
    )


def abort_with(context: grpc.ServicerContext, err: SimpluError) -> NoReturn:
    """End the RPC with ``err``'s status; keeps trailing metadata already set. Always raises."""
    status = to_status(err)
    earlier = tuple((key, value) for key, value in (context.trailing_metadata() or ()) if key != _DETAILS_KEY)
    context.abort_with_status(
        RichStatus(
            code=status.code,
            details=status.details,
            trailing_metadata=(*earlier, *status.trailing_metadata),
        )
    )
    raise AssertionError("context.abort_with_status returned")  # grpc always raises there


def status_code_of(context: grpc.ServicerContext, error: BaseException | None) -> grpc.StatusCode:
    """The code an RPC ended (or is ending) with, as the outer interceptors report it."""
    if isinstance(error, SimpluError):
        return error.code if error.reason in REASONS else grpc.StatusCode.INTERNAL
    chosen = chosen_code(context)
    if chosen is not None:
        return chosen
    if not context.is_active():
        # The caller is gone: its deadline passed, or it cancelled. Whatever the servicer
        # returned, that is what the caller saw.
        return (
            grpc.StatusCode.DEADLINE_EXCEEDED if context.time_remaining() <= 0 else grpc.StatusCode.CANCELLED
        )
    return grpc.StatusCode.OK if error is None else grpc.StatusCode.UNKNOWN


def chosen_code(context: grpc.ServicerContext) -> grpc.StatusCode | None:
    """The code already set on the context (``set_code`` / ``abort``), if any."""
    # ServicerContext.code() exists since grpcio 1.38 but is missing from the type stubs.
    value = getattr(context, "code", lambda: None)()
    return value if isinstance(value, grpc.StatusCode) else None


def _pack(status: Any, detail: Any) -> None:
    packed = any_pb2.Any()
    packed.Pack(detail)
    status.details.append(packed)


def fail(exc: Exception, context: grpc.ServicerContext, method_name: str) -> NoReturn:
    """End the RPC for an exception raised while serving it; always raises.

    A ``SimpluError`` becomes its status with details. Anything else becomes INTERNAL with a
    generic message carrying only the request id (``str(exc)`` may hold secrets and is never
    sent); the traceback goes to the log, where the formatter redacts it. An RPC that already
    chose its status, or whose caller is gone, is left to grpc.
    """
    if isinstance(exc, SimpluError):
        abort_with(context, exc)
    chosen = chosen_code(context)
    if chosen is not None or not context.is_active():
        # Already aborted (grpc's abort raises a bare Exception after choosing the
        # status) or the caller went away: nothing to add, let grpc finish the call.
        raise exc
    _log.error("unhandled error in %s", method_name, exc_info=exc)
    abort_with(context, _internal_error())


class ErrorMappingInterceptor(ServerInterceptor):
    """Innermost interceptor: turns exceptions from servicers into statuses with details."""

    def intercept(
        self,
        method: Behavior,
        request_or_iterator: Any,
        context: grpc.ServicerContext,
        method_name: str,
    ) -> Any:
        try:
            result = method(request_or_iterator, context)
        except Exception as exc:
            fail(exc, context, method_name)
        if isinstance(result, Iterator):
            return self._stream(result, context, method_name)
        return result

    @staticmethod
    def _stream(responses: Iterator[Any], context: grpc.ServicerContext, method_name: str) -> Any:
        try:
            yield from responses
        except Exception as exc:
            fail(exc, context, method_name)


def violations_of(status: Any) -> Sequence[tuple[str, str]]:
    """(field, description) pairs of the BadRequest in a ``google.rpc.Status`` (for clients and tests)."""
    found: list[tuple[str, str]] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            found.extend((v.field, v.description) for v in bad_request.field_violations)
    return found


def retry_info_of(status: Any) -> Any | None:
    """The ``RetryInfo`` in a ``google.rpc.Status``, if any (for clients and tests)."""
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info
    return None


def error_info_of(status: Any) -> Any | None:
    """The ``ErrorInfo`` in a ``google.rpc.Status``, if any (for clients and tests)."""
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None
