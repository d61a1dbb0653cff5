"""Resources built into protobuf once per version (services/encoded_resources.py, resource_proto.fill)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import field_mask_pb2, json_format, struct_pb2
from simplu.v1 import resource_pb2

from simplu_grpc.domain.resources.model import ResourceKey, StoredResource
from simplu_grpc.services import resource_proto as resource
from simplu_grpc.services.encoded_resources import EncodedMessages

KEY = ResourceKey("biz-1", "loc-1", "patient", "p-1")
WHEN = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
DOCUMENT = {"name": "Ana", "status": "new", "visits": [1, 2.5, None, True], "address": {"city": "Iasi"}}
STORED = StoredResource(
    key=KEY,
    business_type="dental",
    data=DOCUMENT,
    start_time=WHEN,
    end_time=None,
    create_time=WHEN - timedelta(days=1),
    update_time=WHEN,
    version=3,
)


def _struct(cache: EncodedMessages, version_key: object, document: dict[str, Any]) -> dict[str, Any]:
    message = struct_pb2.Struct()
    cache.fill(message, version_key, lambda m, d: m.update(d), document)
    return json_format.MessageToDict(message)


def test_a_resource_reads_the_same_built_and_from_stored_bytes() -> None:
    first = resource.to_proto(STORED)
    again = resource.to_proto(STORED)
    assert first == again
    assert json_format.MessageToDict(again.data) == DOCUMENT
    assert (again.resource_id, again.etag, again.business_type) == ("p-1", "v3", 1)
    assert again.start_time.ToDatetime(tzinfo=UTC) == WHEN
    assert not again.HasField("end_time")


def test_a_read_mask_applies_to_a_resource_from_stored_bytes() -> None:
    resource.to_proto(STORED)
    masked = resource.to_proto(STORED, field_mask_pb2.FieldMask(paths=["etag", "resource_id"]))
    assert masked.etag == "v3"
    assert not masked.HasField("data")
    assert not masked.HasField("create_time")


def test_each_version_and_each_resource_is_built_from_its_own_row() -> None:
    resource.to_proto(STORED)
    updated = replace(STORED, data={"name": "Ana", "status": "seen"}, version=4, update_time=WHEN)
    assert json_format.MessageToDict(resource.to_proto(updated).data) == updated.data
    # Deleted and created again: the version starts over, the update time differs.
    recreated = replace(STORED, data={"name": "Other"}, update_time=WHEN + timedelta(seconds=1))
    assert json_format.MessageToDict(resource.to_proto(recreated).data) == {"name": "Other"}
    other_tenant = replace(STORED, key=replace(KEY, business_id="biz-2"), data={"name": "B"})
    built = resource.to_proto(other_tenant)
    assert (built.business_id, json_format.MessageToDict(built.data)) == ("biz-2", {"name": "B"})


def test_the_same_version_key_is_answered_from_its_stored_bytes() -> None:
    cache = EncodedMessages()
    _struct(cache, (KEY, 1, WHEN), DOCUMENT)
    # Same version key, another source: the stored bytes answer (a version never changes).
    assert _struct(cache, (KEY, 1, WHEN), {"other": "x"}) == DOCUMENT
    assert len(cache) == 1


def test_the_oldest_entries_go_first_and_large_messages_are_not_kept() -> None:
    cache = EncodedMessages(max_entries=2, max_message_bytes=64)
    for version in (1, 2, 3):
        _struct(cache, (KEY, version, WHEN), {"v": version})
    assert len(cache) == 2
    # Version 1 was dropped: built from the source given now.
    assert _struct(cache, (KEY, 1, WHEN), {"v": "again"}) == {"v": "again"}
    big = {"text": "x" * 100}
    assert _struct(cache, (KEY, 9, WHEN), big) == big
    assert _struct(cache, (KEY, 9, WHEN), {"text": "changed"}) == {"text": "changed"}


def test_a_list_entry_is_filled_in_place() -> None:
    response = resource_pb2.ListResourcesResponse()
    for _ in range(2):
        resource.fill(response.resources.add(), STORED)
    assert response.resources[0] == response.resources[1] == resource.to_proto(STORED)
