"""The proto build: generated/simplu/v1 from protos/, and the third-party protos buf and protoc import.

Usage:
  python tools/protogen.py OUT_DIR          grpcio-tools stubs plus mypy-protobuf .pyi into OUT_DIR,
                                            and simplu/v1/error_reasons.py (see write_error_reasons)
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
from google.protobuf import descriptor_pb2
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
        descriptors = Path(deps) / "descriptors.binpb"
        args = [
            "grpc_tools.protoc",
            f"--descriptor_set_out={descriptors}",
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
        write_error_reasons(descriptors, out_dir / "simplu" / "v1" / "error_reasons.py")
    package = out_dir / "simplu"
    for marker in (package / "__init__.py", package / "v1" / "__init__.py", package / "v1" / "py.typed"):
        marker.write_text("")
    return sorted(p for p in package.rglob("*") if p.is_file() and p.name != ".stamp")


ERROR_REASON_FILE = "simplu/v1/error_reason.proto"
ERROR_REASON_ENUM = "ErrorReason"
ERROR_REASON_PREFIX = "ERROR_REASON_"


def error_reason_names(descriptor_set: Path) -> list[str]:
    """The reasons ErrorInfo.reason may carry: ErrorReason's values, prefix removed, UNSPECIFIED aside."""
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())
    for file in files.file:
        if file.name != ERROR_REASON_FILE:
            continue
        for enum in file.enum_type:
            if enum.name == ERROR_REASON_ENUM:
                names = [value.name for value in enum.value if value.number != 0]
                unprefixed = [name for name in names if not name.startswith(ERROR_REASON_PREFIX)]
                if unprefixed:
                    raise SystemExit(
                        f"{ERROR_REASON_ENUM} values must start with {ERROR_REASON_PREFIX}: {unprefixed}"
                    )
                return [name.removeprefix(ERROR_REASON_PREFIX) for name in names]
    raise SystemExit(f"{ERROR_REASON_FILE} does not define enum {ERROR_REASON_ENUM}")


def write_error_reasons(descriptor_set: Path, target: Path) -> None:
    """Write the reasons as a ``Literal`` type and a frozenset, so that mypy checks each raise site.

    ``simplu_grpc.errors`` types every error's ``reason`` as ``Reason``: a reason that is not in
    the proto's ErrorReason is a type error at the raise site, and adding one to the proto (then
    ``make protos``) is all it takes to make it sendable.
    """
    names = error_reason_names(descriptor_set)
    lines = [
        f'"""The ErrorInfo reasons of {ERROR_REASON_FILE}. Generated by tools/protogen.py: do not edit."""',
        "",
        "from typing import Final, Literal",
        "",
        "Reason = Literal[",
        *(f'    "{name}",' for name in names),
        "]",
        "",
        "REASONS: Final[frozenset[str]] = frozenset(",
        "    {",
        *(f'        "{name}",' for name in names),
        "    }",
        ")",
        "",
    ]
    target.write_text("\n".join(lines))


if __name__ == "__main__":
    match sys.argv[1:]:
        case ["--deps", out]:
            print(f"staged {len(stage_dependencies(Path(out)))} .proto files into {out}")
        case [out] if not out.startswith("-"):
            for path in generate(Path(out)):
                print(path)
        case _:
            raise SystemExit("usage: protogen.py OUT_DIR | protogen.py --deps OUT_DIR")
