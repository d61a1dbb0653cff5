"""Shared by the issue-14 lifecycle and discovery tests: a full server (moto, Citrus emulator,
PostgreSQL shards) per test on a fresh table, callers' metadata, and failure answers.

A pytest plugin (tests/conftest.py): the fixtures ``lifecycle_stack`` and ``expired_lifecycle_stack``."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from grpc_status import rpc_status
from simplu.v1 import business_pb2

from simplu_grpc.devstack.citrus_emulator import CitrusEmulator
from simplu_grpc.devstack.moto_server import MotoServer, create_business_table
from simplu_grpc.interceptors.errors import error_info_of
from tests.fixtures.citrus import CITRUS_API_KEY
from tests.fixtures.server import MakeServer, RunningServer
from tests.fixtures.tokens import LocalIssuer

REGION = "us-east-1"
Metadata = list[tuple[str, str]]


def bearer(token: str) -> Metadata:
    return [("authorization", f"Bearer {token}")]


def answer(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    """The status code and ErrorInfo reason of a call expected to fail."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    info = error_info_of(rpc_status.from_call(caught.value))
    return caught.value.code(), info.reason if info is not None else ""


def stack_env(moto: MotoServer, citrus: CitrusEmulator, table: str, **extra: str) -> dict[str, str]:
    return {
        "DYNAMODB_ENDPOINT": moto.url,
        "DYNAMODB_BUSINESS_INFO_TABLE": table,
        "CITRUS_SERVER_URL": citrus.url,
        "CITRUS_API_KEY": CITRUS_API_KEY,
        "CITRUS_TIMEOUT": "2000",
        "CITRUS_RETRY_ATTEMPTS": "2",
        **extra,
    }


@dataclass
class Stack:
    """A started server on a fresh table, and how to make callers."""

    server: RunningServer
    env: dict[str, str]
    issuer: LocalIssuer
    admin: Metadata

    def person(self, sub: str | None = None) -> tuple[str, Metadata]:
        """A new person (not a member of anything): their sub and metadata."""
        subject = sub or str(uuid.uuid4())
        token = self.issuer.user_token(sub=subject, username=f"u-{subject[:8]}")
        return subject, bearer(token)

    def machine(self, *scopes: str) -> Metadata:
        return bearer(self.issuer.machine_token(scopes=scopes))

    def create(self, owner: Metadata, name: str = "Clinic", **fields: Any) -> business_pb2.Business:
        """A dental business with locations ``main`` and ``second`` (unless given), owned by ``owner``."""
        fields.setdefault(
            "locations",
            [
                business_pb2.Location(id="main", name="Main"),
                business_pb2.Location(id="second", name="Second"),
            ],
        )
        business = business_pb2.Business(
            name=name, type=fields.pop("type", business_pb2.BUSINESS_TYPE_DENTAL), **fields
        )
        request = business_pb2.CreateBusinessRequest(business=business)
        return self.server.business.CreateBusiness(request, metadata=owner, timeout=20).business


def dynamodb_calls(stack: Stack, operation: str) -> int:
    """DynamoDB calls of one operation the stack's server made, from its own metrics."""
    total = 0.0
    for family in stack.server.deps.metrics.registry.collect():
        for sample in family.samples:
            labels = sample.labels
            wanted = labels.get("operation") == operation
            if wanted and labels.get("dependency") == "dynamodb" and sample.name.endswith("_count"):
                total += sample.value
    return int(total)


def make_stack(
    make_server: MakeServer,
    *,
    moto: MotoServer,
    citrus: CitrusEmulator,
    issuer: LocalIssuer,
    admin_token: str,
    env: Mapping[str, str] | None = None,
) -> Stack:
    table = f"lifecycle-{secrets.token_hex(4)}"
    create_business_table(moto.url, REGION, table)
    full = stack_env(moto, citrus, table, **dict(env or {}))
    return Stack(make_server(env=full), full, issuer, bearer(admin_token))


@pytest.fixture
def lifecycle_stack(
    make_server: MakeServer,
    moto_server: MotoServer,
    module_citrus: CitrusEmulator,
    local_issuer: LocalIssuer,
    admin_token: str,
) -> Stack:
    """A stack with the default retention window (30 days)."""
    return make_stack(
        make_server, moto=moto_server, citrus=module_citrus, issuer=local_issuer, admin_token=admin_token
    )


@pytest.fixture
def expired_lifecycle_stack(
    make_server: MakeServer,
    moto_server: MotoServer,
    module_citrus: CitrusEmulator,
    local_issuer: LocalIssuer,
    admin_token: str,
) -> Stack:
    """A stack whose retention window closes as soon as a business is deleted (0 days)."""
    return make_stack(
        make_server,
        moto=moto_server,
        citrus=module_citrus,
        issuer=local_issuer,
        admin_token=admin_token,
        env={"BUSINESS_RETENTION_DAYS": "0"},
    )
