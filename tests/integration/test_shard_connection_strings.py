"""Connection strings Citrus sends that libpq would misread: a raw "@" in the password, a bad port.

Both go through the whole request path (Citrus emulator over HTTP, the routing cache, the
shard pools, the gRPC server over a real channel); log lines are checked as the JSON formatter
writes them, i.e. as an operator would read them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from grpc_status import rpc_status

from simplu_grpc.devstack.citrus_emulator import CitrusEmulator
from simplu_grpc.devstack.moto_server import MotoServer
from simplu_grpc.interceptors.errors import error_info_of
from simplu_grpc.logs import JsonFormatter
from tests.fixtures.server import MakeServer
from tests.integration.resource_stack import ResourceStack, build_stack

pytestmark = pytest.mark.integration

# Each half is long and unusual enough that finding it anywhere means the password leaked.
LEFT, RIGHT = "pwleft7f3a", "pwright9c1e"
RAW_AT_PASSWORD = f"{LEFT}@{RIGHT}"


@pytest.fixture
def make_stack(
    make_server: MakeServer,
    make_citrus: Callable[..., CitrusEmulator],
    moto_server: MotoServer,
    auth_settings: dict[str, Any],
    admin_token: str,
) -> Iterator[Callable[..., ResourceStack]]:
    built: list[ResourceStack] = []

    def make(**options: Any) -> ResourceStack:
        stack = build_stack(
            make_server=make_server,
            citrus=make_citrus(),
            moto_server=moto_server,
            auth_settings=auth_settings,
            admin_token=admin_token,
            **options,
        )
        built.append(stack)
        return stack

    yield make
    for stack in built:
        stack.server.stop(0)
        stack.server.deps.close()


def log_lines(caplog: pytest.LogCaptureFixture) -> str:
    """Every captured record as the production formatter writes it."""
    formatter = JsonFormatter()
    return "\n".join(formatter.format(record) for record in caplog.records)


def reason_of(error: grpc.RpcError) -> str:
    info = error_info_of(rpc_status.from_call(error))
    return info.reason if info is not None else ""


def test_a_password_with_a_raw_at_sign_never_leaks_and_the_shard_works(
    make_stack: Callable[..., ResourceStack], caplog: pytest.LogCaptureFixture
) -> None:
    """Citrus sends ``user:left@right@host``: the password is everything up to the last "@" (as URL
    parsers read it), so the shard is reached; no part of the password is in an answer or a log line."""
    stack = make_stack()
    if stack.citrus.pg.password:
        pytest.skip("the test server checks passwords; this one needs trust authentication")
    business = stack.add_business()
    shard = stack.register(business)
    pg = stack.citrus.pg
    raw = f"postgresql://{pg.user}:{RAW_AT_PASSWORD}@{pg.host}:{pg.port}/{stack.citrus.shard(shard).database}"
    stack.citrus.move_shard(shard, raw)

    with caplog.at_level(logging.DEBUG):
        created = stack.create(business, data={"name": "Ana"})
        fetched = stack.get(business, created.resource_id)
    assert fetched.data["name"] == "Ana"
    lines = log_lines(caplog)
    assert lines, "nothing was logged: the scan would prove nothing"
    for text in (lines, str(created), str(fetched)):
        for secret in (RAW_AT_PASSWORD, LEFT, RIGHT):
            assert secret not in text


def test_a_malformed_port_is_unavailable_and_known_tenants_keep_their_route(
    make_stack: Callable[..., ResourceStack], caplog: pytest.LogCaptureFixture
) -> None:
    """Citrus answers a new tenant with a port that is not a number: UNAVAILABLE / CITRUS_UNAVAILABLE
    (never INTERNAL), while a tenant already routed to that shard keeps working."""
    stack = make_stack()
    known = stack.add_business()
    newcomer = stack.add_business()
    shard = stack.register(known)
    assert stack.register(newcomer) == shard
    resource_id = stack.create(known).resource_id  # the shard's pool now exists
    database = stack.citrus.shard(shard).database
    pg = stack.citrus.pg
    stack.citrus.move_shard(shard, f"postgresql://{pg.user}:{LEFT}@{pg.host}:54x32/{database}")

    with caplog.at_level(logging.DEBUG), pytest.raises(grpc.RpcError) as caught:
        stack.create(newcomer, timeout=5)
    error = caught.value
    assert error.code() == grpc.StatusCode.UNAVAILABLE, (error.code(), error.details())
    assert reason_of(error) == "CITRUS_UNAVAILABLE"
    assert LEFT not in (error.details() or "")
    assert LEFT not in log_lines(caplog)
    assert stack.get(known, resource_id).resource_id == resource_id
