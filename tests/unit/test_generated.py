"""generated/ is exactly what tools/protogen.py makes from protos/: a stale copy fails the suite."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "generated"


def load_protogen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("protogen", ROOT / "tools" / "protogen.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def files_of(tree: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file under ``tree``'s simplu package (build stamp and caches aside)."""
    return {
        str(path.relative_to(tree)): path.read_bytes()
        for path in sorted((tree / "simplu").rglob("*"))
        if path.is_file() and path.name != ".stamp" and "__pycache__" not in path.parts
    }


def stale_files(fresh: Path, committed: Path) -> list[str]:
    """Files that differ, are missing from, or are extra in ``committed`` compared with ``fresh``."""
    new, old = files_of(fresh), files_of(committed)
    return sorted(name for name in new.keys() | old.keys() if new.get(name) != old.get(name))


@pytest.fixture(scope="module")
def fresh_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("generated")
    load_protogen().generate(out)
    return out


def test_generated_matches_a_fresh_build(fresh_build: Path) -> None:
    """Regenerating from protos/ gives byte-identical files: run `make protos` and commit if this fails."""
    assert files_of(fresh_build), "protogen produced nothing"
    stale = stale_files(fresh_build, COMMITTED)
    assert not stale, f"generated/ is stale, run `make protos`: {stale}"


def test_the_check_fails_when_a_proto_changes(
    fresh_build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proto edited without regenerating is detected: the build from the edited proto differs."""
    protos = tmp_path / "protos"
    shutil.copytree(ROOT / "protos", protos)
    business = protos / "simplu" / "v1" / "business.proto"
    business.write_text(
        business.read_text() + "\nmessage AddedWithoutRegenerating {\n  string note = 1;\n}\n"
    )
    protogen = load_protogen()
    monkeypatch.setattr(protogen, "PROTO_ROOT", protos)
    edited = tmp_path / "edited"
    protogen.generate(edited)
    stale = stale_files(edited, COMMITTED)
    assert "simplu/v1/business_pb2.py" in stale
    assert "simplu/v1/business_pb2.pyi" in stale
    assert stale_files(fresh_build, COMMITTED) == []


def test_the_check_notices_a_missing_or_extra_file(fresh_build: Path, tmp_path: Path) -> None:
    """A file deleted from, or left over in, generated/ counts as stale."""
    copy = tmp_path / "copy"
    shutil.copytree(fresh_build, copy)
    (copy / "simplu" / "v1" / "resource_pb2_grpc.py").unlink()
    (copy / "simplu" / "v1" / "leftover_pb2.py").write_text("# from a deleted proto\n")
    assert stale_files(fresh_build, copy) == ["simplu/v1/leftover_pb2.py", "simplu/v1/resource_pb2_grpc.py"]
