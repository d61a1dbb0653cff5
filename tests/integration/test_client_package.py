"""The light client distribution: a wheel of the stubs and the channel helper, nothing of the server."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
import simplu_client
from simplu.v1 import resource_pb2, resource_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


@pytest.mark.slow
def test_client_wheel_installs_alone_and_imports_without_server_dependencies(tmp_path: Path) -> None:
    """The wheel built from clients/python installs into a fresh venv with only grpcio, protobuf and
    googleapis-common-protos, imports simplu.v1 and simplu_client, and brings neither psycopg nor boto3."""
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--wheel-dir",
            str(dist),
            "clients/python",
        ],
        cwd=ROOT,
        check=True,
    )
    wheels = list(dist.glob("simplu_client-*.whl"))
    assert len(wheels) == 1
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(wheels[0])], check=True)
    probe = (
        "import importlib.util as u, simplu.v1.resource_pb2_grpc, simplu.v1.business_pb2_grpc,"
        " simplu.v1.shard_admin_pb2_grpc, simplu_client;"
        " print(*(n for n in ('psycopg', 'boto3', 'simplu_grpc', 'psycopg_pool') if u.find_spec(n)))"
    )
    found = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert found.stdout.strip() == ""
    installed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True, check=True
    ).stdout.lower()
    names = {line.split("==")[0].replace("_", "-") for line in installed.split()} - {"pip", "setuptools"}
    required = {"simplu-client", "grpcio", "protobuf", "googleapis-common-protos"}
    assert required <= names <= required | {"typing-extensions"}  # grpcio's own dependency


class _Flaky(resource_pb2_grpc.ResourceServiceServicer):
    """Answers UNAVAILABLE to the first call of each method, then succeeds; counts calls."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def _count(self, method: str, context: grpc.ServicerContext) -> None:
        with self._lock:
            self.calls[method] = self.calls.get(method, 0) + 1
            first = self.calls[method] == 1
        if first:
            context.abort(grpc.StatusCode.UNAVAILABLE, "try again")

    def GetResource(
        self, request: resource_pb2.GetResourceRequest, context: grpc.ServicerContext
    ) -> resource_pb2.Resource:
        self._count("GetResource", context)
        return resource_pb2.Resource(resource_id=request.resource_id)

    def CreateResource(
        self, request: resource_pb2.CreateResourceRequest, context: grpc.ServicerContext
    ) -> resource_pb2.Resource:
        self._count("CreateResource", context)
        return resource_pb2.Resource(resource_id="new")


@pytest.fixture
def flaky() -> Iterator[tuple[_Flaky, str]]:
    servicer = _Flaky()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    resource_pb2_grpc.add_ResourceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        server.stop(None)


def test_channel_retries_reads_but_never_writes(flaky: tuple[_Flaky, str]) -> None:
    """Through simplu_client.channel a read that meets UNAVAILABLE is retried by gRPC and succeeds;
    a create that meets UNAVAILABLE is not retried (it may have committed: the caller decides)."""
    servicer, target = flaky
    with simplu_client.channel(target) as chan:
        stub = resource_pb2_grpc.ResourceServiceStub(chan)
        got = stub.GetResource(resource_pb2.GetResourceRequest(resource_id="r1"), timeout=5)
        assert got.resource_id == "r1"
        assert servicer.calls["GetResource"] == 2
        with pytest.raises(grpc.RpcError) as caught:
            stub.CreateResource(resource_pb2.CreateResourceRequest(), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert servicer.calls["CreateResource"] == 1
