"""The proto build: generated/simplu/v1 from protos/, and the third-party protos buf and protoc import.

Usage:
  python tools/protogen.py OUT_DIR          grpcio-tools stubs plus mypy-protobuf .pyi into OUT_DIR
  python tools/protogen.py --deps OUT_DIR   stage the importable googleapis protos into OUT_DIR

The test suite runs the build into a temporary directory and compares the result with the committed
generated/ to catch stale code. The contracts may import google/api, google/type and google/rpc;
those .proto files come from the installed googleapis-common-protos package (nothing is fetched
from the network). `make` stages them into build/proto-deps, the second module of the buf
workspace (buf.yaml), and generate() stages them into a temporary include directory, so buf and
protoc see exactly the same files. The well-known types (google/protobuf/*) are not staged: buf
ships them, and protoc takes them from grpcio-tools.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
# Directories of googleapis-common-protos the contracts may import from; each is self-contained
# apart from the well-known types.
GOOGLEAPIS_PACKAGES = ("google/api", "google/type", "google/rpc")


def googleapis_root() -> Path:
    """The directory holding google/api/field_behavior.proto (googleapis-common-protos' site-packages)."""
    spec = importlib.util.find_spec("google.api")
    for location in (spec.submodule_search_locations or []) if spec else []:
        api = Path(location)
        if (api / "field_behavior.proto").is_file():
            return api.parent.parent
    raise SystemExit("googleapis-common-protos with its .proto files is not installed: run `make install`")


def stage_dependencies(out_dir: Path) -> list[Path]:
    """Replace out_dir's google/ tree with the .proto files of GOOGLEAPIS_PACKAGES; return them."""
    source = googleapis_root()
    shutil.rmtree(out_dir / "google", ignore_errors=True)
    written = []
    for package in GOOGLEAPIS_PACKAGES:
        for proto in sorted((source / package).rglob("*.proto")):
            target = out_dir / proto.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(proto, target)
            written.append(target)
    return written


def generate(out_dir: Path) -> list[Path]:
    """Compile every proto under protos/simplu/v1 into out_dir; return the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "simplu" / "v1").glob("*.proto"))
    plugin = Path(sys.executable).parent / "protoc-gen-mypy_grpc"
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory(prefix="proto-deps-") as deps:
        stage_dependencies(Path(deps))
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"-I{deps}",
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
    match sys.argv[1:]:
        case ["--deps", out]:
            print(f"staged {len(stage_dependencies(Path(out)))} .proto files into {out}")
        case [out] if not out.startswith("-"):
            for path in generate(Path(out)):
                print(path)
        case _:
            raise SystemExit("usage: protogen.py OUT_DIR | protogen.py --deps OUT_DIR")
