"""Sampling profiles of a running server process with py-spy, summarised as text.

``record`` runs ``py-spy record --format raw`` (collapsed stacks: one line per distinct stack,
frames separated by ``;``, then a sample count) against a pid; ``summarize`` turns that
file into the functions where samples end (self time) and the share of samples that pass
through each area of the code (inclusive). ``--gil`` keeps only samples of the thread
holding the GIL: with one process and many threads that is where the interpreter's time goes.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

# Areas of the request path, matched against "function (file:line)" frames; first match wins
# per area, and a sample counts once per area it passes through.
AREAS = {
    "grpc server (Python layer)": "grpc/_server.py",
    "interceptors": "simplu_grpc/interceptors/",
    "access log formatting/writing": "simplu_grpc/logs.py",
    "logging module": "/logging/__init__.py",
    "metrics (prometheus_client)": "prometheus_client/",
    "token verification": "simplu_grpc/adapters/cognito/token_verifier.py",
    "business cache + authz": "simplu_grpc/domain/auth/authz.py",
    "routing": "simplu_grpc/domain/placement/routing.py",
    "pool checkout / session (postgres/pool_*.py)": "simplu_grpc/adapters/postgres/pool_",
    "psycopg_pool": "psycopg_pool/",
    "psycopg": "psycopg/",
    "shard_store (SQL + row mapping)": "simplu_grpc/adapters/postgres/shard_store.py",
    "servicer (proto <-> domain)": "simplu_grpc/services/resource.py",
    "protobuf well-known types (Struct)": "google/protobuf/internal/well_known_types.py",
    "validation": "simplu_grpc/domain/checks.py",
    "threading (locks, conditions)": "/threading.py",
}


def py_spy() -> str:
    """The py-spy next to this interpreter (a dev dependency), else one on PATH."""
    local = Path(sys.executable).with_name("py-spy")
    if local.exists():
        return str(local)
    found = shutil.which("py-spy")
    if found is None:
        raise SystemExit("py-spy is not installed: make install (it is a dev dependency)")
    return found


def record(pid: int, seconds: float, out: Path, *, gil: bool, rate: int = 250) -> subprocess.Popen[bytes]:
    """Start sampling ``pid`` (and its subprocesses) for ``seconds``; returns the py-spy process."""
    command = [
        py_spy(),
        "record",
        "--pid",
        str(pid),
        "--subprocesses",
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        str(rate),
        "--format",
        "raw",
        "--nonblocking",
        "--output",
        str(out),
    ]
    if gil:
        command.append("--gil")
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _stacks(path: Path) -> Counter[tuple[str, ...]]:
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[tuple(stack.split(";"))] += int(count)
    return stacks


def summarize(path: Path, top: int = 25) -> dict[str, object]:
    """Self time by function and inclusive share by area, as fractions of all samples."""
    stacks = _stacks(path)
    total = sum(stacks.values())
    if not total:
        return {"samples": 0}
    by_self: Counter[str] = Counter()
    by_area: Counter[str] = Counter()
    for frames, count in stacks.items():
        by_self[frames[-1]] += count
        text = ";".join(frames)
        for area, marker in AREAS.items():
            if marker in text:
                by_area[area] += count
    return {
        "samples": total,
        "self": [(name, round(n / total, 4)) for name, n in by_self.most_common(top)],
        "areas": {area: round(n / total, 4) for area, n in by_area.most_common()},
    }


def render(summary: dict[str, object]) -> str:
    lines = [f"{summary.get('samples', 0)} samples"]
    areas = summary.get("areas", {})
    if isinstance(areas, dict):
        lines.append("inclusive share by area:")
        lines += [f"  {share:6.1%}  {area}" for area, share in areas.items()]
    own = summary.get("self", [])
    if isinstance(own, list):
        lines.append("self time by function:")
        lines += [f"  {share:6.1%}  {name}" for name, share in own]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(summarize(Path(sys.argv[1]))))
