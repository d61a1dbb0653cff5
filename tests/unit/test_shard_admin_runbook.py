"""The operator's runbook: every grpcurl command names a real ShardAdmin method with a request that parses."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from google.protobuf import json_format, symbol_database
from simplu.v1 import shard_admin_pb2

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SERVICE = shard_admin_pb2.DESCRIPTOR.services_by_name["ShardAdminService"]


def runbook_commands() -> list[list[str]]:
    """Every ``adm``/``grpcurl`` line calling ShardAdmin, split like a shell would."""
    commands: list[list[str]] = []
    for line in README.read_text(encoding="utf-8").splitlines():
        if "simplu.v1.ShardAdminService/" in line and re.match(r"\s*(adm|grpcurl)\s", line):
            commands.append(shlex.split(line))
    assert commands, "the README's runbook has no ShardAdmin commands"
    return commands


def test_runbook_has_a_command_for_every_rpc() -> None:
    """Each ShardAdmin method appears in at least one runbook command."""
    commands = runbook_commands()
    used = {argv[-1].split("/", 1)[1] for argv in commands}
    assert {m.name for m in SERVICE.methods} <= used


def test_runbook_requests_parse_as_their_request_type() -> None:
    """Every -d body is valid JSON for the method's request message (field and enum names included)."""
    commands = runbook_commands()
    for argv in commands:
        method_name = argv[-1].split("/", 1)[1]
        method = SERVICE.methods_by_name[method_name]
        body = argv[argv.index("-d") + 1] if "-d" in argv else "{}"
        request_class = symbol_database.Default().GetSymbol(method.input_type.full_name)
        json_format.Parse(body, request_class())  # raises on an unknown field or enum value


def test_grpcurl_alias_sends_the_token_and_shows_zero_values() -> None:
    """The runbook's alias passes the bearer token and -emit-defaults (so `up: false` is visible)."""
    text = README.read_text(encoding="utf-8")
    alias = next(line for line in text.splitlines() if line.startswith("alias adm="))
    assert "-emit-defaults" in alias
    assert '-H "authorization: Bearer $TOKEN"' in alias
