"""The proto guard of `make check`: buf lint, and buf breaking against the committed v1 baseline.

Each test works on a copy of the buf workspace (buf.yaml, protos/ and the googleapis protos staged
from the venv, as the Makefile stages them) and runs buf with the arguments the Makefile uses.
buf is installed by `make install`; a missing buf fails these tests, it never skips them.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.unit.test_generated import load_protogen

ROOT = Path(__file__).resolve().parents[2]
BUF = ROOT / "tools" / "buf" / "node_modules" / ".bin" / "buf"
BASELINE = ROOT / "protos" / "simplu" / "v1.image.binpb"
# buf's exit code when the check ran and found violations (1 means buf itself failed).
VIOLATIONS = 100
# The first field declaration in a message body: indent, "type name = ", number.
FIELD = re.compile(r"^(  (?:repeated |optional )?[\w.]+ (\w+) = )(\d+)(;| \[)", re.MULTILINE)


def buf(workspace: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the pinned buf in ``workspace``; fail (not skip) when it is not installed."""
    if not BUF.is_file():
        pytest.fail(f"buf is not installed at {BUF.relative_to(ROOT)}: run `make install`")
    return subprocess.run(
        [str(BUF), *args], cwd=workspace, capture_output=True, text=True, timeout=120, check=False
    )


def lint(workspace: Path) -> subprocess.CompletedProcess[str]:
    return buf(workspace, "lint", "protos", "--error-format", "json")


def breaking(workspace: Path) -> subprocess.CompletedProcess[str]:
    return buf(workspace, "breaking", "protos", "--against", str(BASELINE), "--exclude-imports")


def rules(result: subprocess.CompletedProcess[str]) -> set[str]:
    """The rule names of buf's JSON violations."""
    return {json.loads(line)["type"] for line in result.stdout.splitlines() if line.strip()}


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A copy of the buf workspace with freshly staged googleapis protos."""
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    load_protogen().stage_dependencies(tmp_path / "build" / "proto-deps")
    return tmp_path


def test_the_protos_pass_lint(workspace: Path) -> None:
    """The committed protos satisfy buf.yaml's lint rules."""
    result = lint(workspace)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_protos_are_compatible_with_the_baseline(workspace: Path) -> None:
    """The committed protos make no breaking change to the committed baseline image."""
    result = breaking(workspace)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_renumbered_field_fails_the_breaking_check(workspace: Path) -> None:
    """Giving a released field another number is reported as a breaking change."""
    proto = workspace / "protos" / "simplu" / "v1" / "resource.proto"
    text = proto.read_text()
    field = FIELD.search(text)
    assert field is not None, "no field declaration found in resource.proto"
    assert " = 1000;" not in text
    proto.write_text(text[: field.start(3)] + "1000" + text[field.end(3) :])
    result = breaking(workspace)
    assert result.returncode == VIOLATIONS, result.stdout + result.stderr
    assert f'field "{field.group(3)}" with name "{field.group(2)}"' in result.stdout


@pytest.mark.parametrize("ignore_comment", ["", "// buf:lint:ignore MESSAGE_PASCAL_CASE\n"])
def test_a_lint_violation_fails_and_cannot_be_silenced_in_the_proto(
    workspace: Path, ignore_comment: str
) -> None:
    """A badly named message fails lint, also with a buf:lint:ignore comment (exceptions live in buf.yaml)."""
    proto = workspace / "protos" / "simplu" / "v1" / "business.proto"
    proto.write_text(
        proto.read_text() + f"\n// Named against the style.\n{ignore_comment}message bad_name {{}}\n"
    )
    result = lint(workspace)
    assert result.returncode == VIOLATIONS, result.stdout + result.stderr
    assert rules(result) == {"MESSAGE_PASCAL_CASE"}


PROBE = """syntax = "proto3";

package simplu.v1;

import "google/api/field_behavior.proto";
import "google/rpc/error_details.proto";
import "google/type/dayofweek.proto";
import "google/type/timeofday.proto";

// Uses one type from each googleapis package the contracts may import.
message GoogleapisProbe {
  string id = 1 [(google.api.field_behavior) = IDENTIFIER];
  google.type.DayOfWeek day = 2 [(google.api.field_behavior) = REQUIRED];
  google.type.TimeOfDay opens = 3;
  google.rpc.RetryInfo retry = 4;
}
"""


def test_protos_may_import_googleapis_for_buf_protoc_and_python(
    workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proto importing google/api, google/type and google/rpc builds with buf and protoc, and imports."""
    (workspace / "protos" / "simplu" / "v1" / "googleapis_probe.proto").write_text(PROBE)
    built = buf(workspace, "build", "protos")
    assert built.returncode == 0, built.stderr

    protogen = load_protogen()
    monkeypatch.setattr(protogen, "PROTO_ROOT", workspace / "protos")
    out = tmp_path / "out"
    protogen.generate(out)
    spec = importlib.util.spec_from_file_location(
        "googleapis_probe_pb2", out / "simplu/v1/googleapis_probe_pb2.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # resolves google.api / google.type / google.rpc _pb2 imports

    from google.api import field_behavior_pb2
    from google.type import dayofweek_pb2

    fields = module.GoogleapisProbe.DESCRIPTOR.fields_by_name
    behaviour = fields["day"].GetOptions().Extensions[field_behavior_pb2.field_behavior]
    assert list(behaviour) == [field_behavior_pb2.REQUIRED]
    assert fields["day"].enum_type.full_name == "google.type.DayOfWeek"
    probe = module.GoogleapisProbe(day=dayofweek_pb2.FRIDAY)
    assert module.GoogleapisProbe.FromString(probe.SerializeToString()).day == dayofweek_pb2.FRIDAY
