"""Permanent deletion past the retention window: shard rows, Citrus registrations and the business's
items go, in bounded batches that a stopped run resumes. Real server, moto, Citrus emulator and
PostgreSQL shards; the purge runs through ``wiring.build_purge`` and the ``simplu-grpc`` command."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf import struct_pb2
from simplu.v1 import business_pb2, resource_pb2

from simplu_grpc.adapters.dynamodb.business_store import BusinessStore, membership_id
from simplu_grpc.adapters.dynamodb.invitation_items import invitation_item_id
from simplu_grpc.adapters.dynamodb.invitation_store import InvitationStore
from simplu_grpc.devstack.citrus_emulator import CitrusEmulator
from simplu_grpc.devstack.moto_server import MotoServer, client
from simplu_grpc.domain.business.invitation_model import Invitation
from simplu_grpc.domain.business.model import Member
from simplu_grpc.domain.business.retention import PurgeReport
from simplu_grpc.metrics import Metrics
from simplu_grpc.wiring import build_purge
from tests.fixtures.server import BASE_ENV, settings_for
from tests.integration.lifecycle_stack import REGION, Metadata, Stack, answer

pytestmark = pytest.mark.integration

SHARD_TABLES = ("resources", "request_ids", "resource_changes")


class Stopped(Exception):
    """Stands for the process dying between two batches."""


@pytest.fixture
def stack(expired_lifecycle_stack: Stack) -> Stack:
    return expired_lifecycle_stack


def populate(stack: Stack, owner: Metadata, business_id: str, count: int) -> None:
    """``count`` patients in each of ``main`` and ``second`` (with request ids), each updated once."""
    for location in ("main", "second"):
        for n in range(count):
            created = stack.server.resource.CreateResource(
                resource_pb2.CreateResourceRequest(
                    resource=resource_pb2.Resource(
                        business_id=business_id,
                        location_id=location,
                        resource_type="patients",
                        data=struct_pb2.Struct(fields={"n": struct_pb2.Value(number_value=n)}),
                    ),
                    request_id=f"req-{location}-{n}",
                ),
                metadata=owner,
                timeout=20,
            )
            stack.server.resource.UpdateResource(
                resource_pb2.UpdateResourceRequest(
                    resource=resource_pb2.Resource(
                        business_id=business_id,
                        location_id=location,
                        resource_type="patients",
                        resource_id=created.resource_id,
                        data=struct_pb2.Struct(fields={"n": struct_pb2.Value(number_value=-n)}),
                    )
                ),
                metadata=owner,
                timeout=20,
            )


def shard_rows(citrus: CitrusEmulator, business_id: str) -> int:
    """Rows with this business_id in every table of every shard the emulator has."""
    total = 0
    for shard in citrus.shards():
        with psycopg.connect(shard.connection_string, autocommit=True) as conn:
            for table in SHARD_TABLES:
                if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,):
                    continue
                row = conn.execute(
                    f"SELECT count(*) FROM {table} WHERE business_id = %s",
                    (business_id,),
                ).fetchone()
                total += int(row[0]) if row else 0
    return total


def item(stack: Stack, moto_server: MotoServer, item_id: str) -> dict[str, Any] | None:
    dynamodb = client("dynamodb", moto_server.url, REGION)
    table = stack.env["DYNAMODB_BUSINESS_INFO_TABLE"]
    found: dict[str, Any] | None = dynamodb.get_item(
        TableName=table, Key={"id": {"S": item_id}}, ConsistentRead=True
    ).get("Item")
    return found


def purge_env(stack: Stack, **extra: str) -> dict[str, str]:
    return {**BASE_ENV, **stack.env, **extra}


def purge_command(stack: Stack) -> subprocess.CompletedProcess[str]:
    """``simplu-grpc purge-businesses`` in its own process, with the stack's environment; it must succeed."""
    command = [sys.executable, "-m", "simplu_grpc.cli", "purge-businesses", "--batch-size", "5"]
    done = subprocess.run(
        command,
        env={**os.environ, **purge_env(stack)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done


def test_a_purge_stopped_between_batches_resumes_and_removes_everything_but_other_tenants(
    stack: Stack, moto_server: MotoServer, module_citrus: CitrusEmulator
) -> None:
    """Deleted past the window: a run stopped after its first batch of 3 rows has marked the business
    (undelete refused), deleted 3 rows and left the rest; the `simplu-grpc purge-businesses` command
    then removes every shard row of it, its Citrus registrations, membership items, label claim and
    the business item, and nothing of another business; a further run finds nothing to do."""
    owner_sub, owner = stack.person()
    doomed = stack.create(owner, "Doomed", domain_label="doomed-clinic")
    kept = stack.create(owner, "Kept")
    populate(stack, owner, doomed.id, 4)
    populate(stack, owner, kept.id, 2)
    doomed_rows, kept_rows = shard_rows(module_citrus, doomed.id), shard_rows(module_citrus, kept.id)
    assert doomed_rows == 2 * 4 * 4  # per patient: the resource, its request id, two changes
    stack.server.business.DeleteBusiness(
        business_pb2.DeleteBusinessRequest(business_id=doomed.id), metadata=owner, timeout=10
    )

    def stop(report: PurgeReport) -> None:
        raise Stopped

    purge, close = build_purge(settings_for(purge_env(stack)), batch_size=3, on_batch=stop)
    try:
        with pytest.raises(Stopped):
            purge.purge(doomed.id)
    finally:
        close()
    assert shard_rows(module_citrus, doomed.id) == doomed_rows - 3
    marked = item(stack, moto_server, doomed.id)
    assert marked is not None
    assert "purgeStartedAt" in marked
    undelete = business_pb2.UndeleteBusinessRequest(business_id=doomed.id)
    assert answer(lambda: stack.server.business.UndeleteBusiness(undelete, metadata=owner, timeout=10)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "RETENTION_EXPIRED",
    )

    done = purge_command(stack)
    assert f"purged {doomed.id}" in done.stdout
    assert "1 businesses purged" in done.stdout
    assert shard_rows(module_citrus, doomed.id) == 0
    assert shard_rows(module_citrus, kept.id) == kept_rows
    registrations = module_citrus.registrations()
    assert not [key for key in registrations if key.startswith(f"{doomed.id}-")]
    assert {f"{kept.id}-main", f"{kept.id}-second"} <= set(registrations)
    assert item(stack, moto_server, doomed.id) is None
    assert item(stack, moto_server, membership_id(owner_sub, doomed.id)) is None
    assert item(stack, moto_server, "domain#doomed-clinic") is None
    assert item(stack, moto_server, membership_id(owner_sub, kept.id)) is not None
    get = business_pb2.GetBusinessRequest(business_id=doomed.id)
    assert answer(lambda: stack.server.business.GetBusiness(get, metadata=stack.admin, timeout=10)) == (
        grpc.StatusCode.NOT_FOUND,
        "BUSINESS_NOT_FOUND",
    )
    again = purge_command(stack)
    assert "0 businesses purged, 0 shard rows deleted" in again.stdout


def test_a_business_inside_its_window_is_not_purged(stack: Stack, module_citrus: CitrusEmulator) -> None:
    """With a 30-day window a business deleted now is skipped: its rows and registrations stay,
    and its owner can still undelete it."""
    _, owner = stack.person()
    business = stack.create(owner, "Recent")
    populate(stack, owner, business.id, 1)
    rows = shard_rows(module_citrus, business.id)
    stack.server.business.DeleteBusiness(
        business_pb2.DeleteBusinessRequest(business_id=business.id), metadata=owner, timeout=10
    )
    purge, close = build_purge(settings_for(purge_env(stack, BUSINESS_RETENTION_DAYS="30")))
    try:
        report = purge.purge_due()
    finally:
        close()
    assert business.id not in report.purged
    assert shard_rows(module_citrus, business.id) == rows
    assert f"{business.id}-main" in module_citrus.registrations()


def test_the_purge_completes_when_citrus_offers_no_way_to_unregister(
    stack: Stack, moto_server: MotoServer, module_citrus: CitrusEmulator
) -> None:
    """A Citrus answering 405 to the unregister call: the shard rows and items still go, the
    registrations stay, and the report says Citrus could not be told."""
    _, owner = stack.person()
    business = stack.create(owner, "Old Citrus")
    populate(stack, owner, business.id, 1)
    stack.server.business.DeleteBusiness(
        business_pb2.DeleteBusinessRequest(business_id=business.id), metadata=owner, timeout=10
    )
    module_citrus.offer_unregister(False)
    purge, close = build_purge(settings_for(purge_env(stack)))
    try:
        report = purge.purge(business.id)
    finally:
        close()
        module_citrus.offer_unregister(True)
    assert report.purged == [business.id]
    assert report.citrus_unsupported
    assert shard_rows(module_citrus, business.id) == 0
    assert f"{business.id}-main" in module_citrus.registrations()
    assert item(stack, moto_server, business.id) is None


def test_the_purge_removes_the_business_invitations_and_no_one_elses(
    stack: Stack, moto_server: MotoServer, module_citrus: CitrusEmulator
) -> None:
    """Invitation items live in the business table under the business's partition of member-index:
    the purge deletes every one of the purged business's (pending or closed) and leaves another
    business's alone."""
    owner_sub, owner = stack.person()
    doomed = stack.create(owner, "Inviting")
    kept = stack.create(owner, "Also inviting")
    table = stack.env["DYNAMODB_BUSINESS_INFO_TABLE"]
    dynamodb = client("dynamodb", moto_server.url, REGION)
    invitations = InvitationStore(
        businesses=BusinessStore(table=table, client=dynamodb, metrics=Metrics()),
        table=table,
        client=dynamodb,
    )
    now = datetime.now(UTC)
    made: dict[str, list[str]] = {doomed.id: [], kept.id: []}
    for business_id, ids in made.items():
        for n in range(3):
            invitation_id = secrets.token_hex(16)
            invitations.create(
                Invitation(
                    id=invitation_id,
                    business_id=business_id,
                    email=f"staff{n}@example.com",
                    membership=Member(role="staff"),
                    invitee=f"sub-{n}",
                    invited_by=owner_sub,
                    create_time=now,
                    expire_time=now + timedelta(days=1),
                    code_hash="0" * 64,
                )
            )
            ids.append(invitation_id)
    stack.server.business.DeleteBusiness(
        business_pb2.DeleteBusinessRequest(business_id=doomed.id), metadata=owner, timeout=10
    )

    purge_command(stack)

    assert all(item(stack, moto_server, invitation_item_id(i)) is None for i in made[doomed.id])
    assert all(item(stack, moto_server, invitation_item_id(i)) is not None for i in made[kept.id])
    assert item(stack, moto_server, doomed.id) is None
