"""Build generated/simplu/v1 from protos/: grpcio-tools stubs plus mypy-protobuf .pyi for the services.

Usage: python tools/protogen.py OUT_DIR. The test suite runs it into a temporary directory and
compares the result with the committed generated/ to catch stale code.
"""

from __future__ import annotations

import sys
from pathlib import Path

import grpc_tools
from google.api import field_behavior_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"


def generate(out_dir: Path) -> list[Path]:
    """Compile every proto under protos/simplu/v1 into out_dir; return the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "simplu" / "v1").glob("*.proto"))
    plugin = Path(sys.executable).parent / "protoc-gen-mypy_grpc"
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    # google/api/*.proto and google/type/*.proto ship with googleapis-common-protos (whose
    # generated modules the stubs import at run time).
    common_protos = Path(field_behavior_pb2.__file__).parent.parent.parent
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"-I{common_protos}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--plugin=protoc-gen-mypy_grpc={plugin}",
        f"--mypy_grpc_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    package = out_dir / "simplu"
    for marker in (package / "__init__.py", package / "v1" / "__init__.py", package / "v1" / "py.typed"):
        marker.write_text("")
    return sorted(p for p in package.rglob("*") if p.is_file() and p.name != ".stamp")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: protogen.py OUT_DIR")
    for path in generate(Path(sys.argv[1])):
        print(path)
