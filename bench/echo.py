"""A bare echo server on the service's own transport: the ceiling the capacity bench compares with.

``python -m bench.echo --port P`` serves ``/bench.Echo/Echo`` (request bytes back, no protobuf,
no interceptor) on ``server.transport(settings)``: the same thread pool, options and
concurrency limit as the service, so "ratio to echo" measures what the service adds on top
of its transport on this machine, in this run. It also answers the standard health check so
the bench knows when it is up. Runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import threading
from types import FrameType
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from simplu_grpc.server import transport
from simplu_grpc.settings import Settings

METHOD = "/bench.Echo/Echo"


def _echo(request: bytes, _context: grpc.ServicerContext) -> bytes:
    return request


class _Echo(grpc.GenericRpcHandler):
    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        if handler_call_details.method == METHOD:
            # No (de)serializer: identity bytes, so protobuf costs nothing here.
            return grpc.unary_unary_rpc_method_handler(_echo)
        return None


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.echo")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    settings = dataclasses.replace(Settings(), grpc_host="127.0.0.1", grpc_port=args.port)
    server = transport(settings)
    server.add_generic_rpc_handlers((_Echo(),))
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if server.add_insecure_port(f"127.0.0.1:{args.port}") == 0:
        raise SystemExit(f"echo server: cannot listen on port {args.port}")
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    while not stop.wait(timeout=1.0):
        pass
    server.stop(1).wait()


if __name__ == "__main__":
    main()
