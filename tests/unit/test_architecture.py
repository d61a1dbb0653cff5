"""The layering rules of issue 10, checked on the source: domain/ depends on nothing below it,
and modules stay small enough to read.

The domain declares Protocols (ports) for what it needs; adapters implement them. So no
module under simplu_grpc/domain/ may import the adapters or the libraries they wrap.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "simplu_grpc"
DOMAIN = ROOT / "domain"

FORBIDDEN_IN_DOMAIN = (
    "simplu_grpc.adapters",
    "psycopg",
    "psycopg_pool",
    "jwt",
    "boto3",
    "botocore",
    "urllib3",
    "grpc",
)

MAX_LINES = 400
# Modules allowed over MAX_LINES, each with the reason it is one module.
LONG_MODULES: dict[str, str] = {
    "devstack/citrus_emulator.py": (
        "a development tool (not served): one HTTP emulator of the whole Citrus contract, read top to"
        " bottom next to DESIGN §5"
    ),
    "devstack/stack.py": "a development tool (not served): the local stack's processes and their lifecycle",
    "devstack/postgres.py": "a development tool (not served): a throwaway PostgreSQL cluster's lifecycle",
    "adapters/postgres/pool_registry.py": (
        "the registry's checkout, replacement, idle close and shutdown share one lock and one dict of"
        " pools; split, each piece would reach into the others' state (about 35 lines are its design note)"
    ),
    "adapters/postgres/shard_store.py": (
        "every resource statement's parameters and row mapping, one per RPC, beside the fixed SQL in"
        " resource_statements.py; a few lines over, and cut further it would split one RPC's SQL"
        " from its rows"
    ),
    "wiring.py": (
        "the composition root: one factory per aggregate (build_auth, build_business, build_people,"
        " build_resources, build_admin), read top to bottom in dependency order; the only module"
        " that knows which adapter implements which port"
    ),
    "settings.py": (
        "the one table of every setting (its default and why) and the one parser that reads and"
        " checks them from the environment; split, a setting's default and its bounds would part"
    ),
    "adapters/citrus/client.py": (
        "the one Citrus client: every endpoint it calls with one retry and timeout policy, and the one"
        " place that states what it assumes of the real server beyond DESIGN (placement, unregister)"
    ),
    "server.py": (
        "the transport, its interceptor chain, binding and the process lifecycle (workers, signals):"
        " the order of startup and shutdown is the design and reads best in one place"
    ),
}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            # "from simplu_grpc import adapters" names the package in the alias.
            found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
    return found


def _forbidden(module: str) -> str | None:
    for prefix in FORBIDDEN_IN_DOMAIN:
        if module == prefix or module.startswith(prefix + "."):
            return prefix
    return None


def test_the_domain_imports_no_adapter_and_no_infrastructure_library() -> None:
    """No module under simplu_grpc/domain/ imports simplu_grpc.adapters, psycopg, psycopg_pool,
    jwt, boto3, botocore, urllib3 or grpc (type-checking-only imports included)."""
    breaches = []
    for path in sorted(DOMAIN.rglob("*.py")):
        for line, module in _imports(path):
            prefix = _forbidden(module)
            if prefix is not None:
                breaches.append(f"{path.relative_to(ROOT.parent)}:{line} imports {module}")
    assert not breaches, "the domain depends on infrastructure:\n" + "\n".join(sorted(set(breaches)))


def test_the_rule_sees_every_form_of_import(tmp_path: Path) -> None:
    """The check finds plain, dotted, from- and package-alias imports (it cannot pass by missing them)."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import grpc\nimport psycopg.errors\nfrom simplu_grpc import adapters\n"
        "from simplu_grpc.adapters.pools import PoolRegistry\nfrom jwt import decode\n"
        "from simplu_grpc.domain import cache\nimport grpcio_extra\n",
        encoding="utf-8",
    )
    found = {prefix for _, module in _imports(sample) if (prefix := _forbidden(module)) is not None}
    assert found == {"grpc", "psycopg", "simplu_grpc.adapters", "jwt"}


def test_modules_stay_under_400_lines_unless_a_reason_is_given() -> None:
    """A module over 400 lines holds more than one thing; the few exceptions say why above."""
    long = {
        str(path.relative_to(ROOT)): len(path.read_text(encoding="utf-8").splitlines())
        for path in sorted(ROOT.rglob("*.py"))
    }
    over = {name: lines for name, lines in long.items() if lines > MAX_LINES and name not in LONG_MODULES}
    assert not over, "modules over 400 lines without a stated reason:\n" + "\n".join(
        f"{name}: {lines} lines" for name, lines in sorted(over.items())
    )
    stale = [name for name in LONG_MODULES if long.get(name, 0) <= MAX_LINES]
    assert not stale, f"listed as long but no longer are (drop them from LONG_MODULES): {stale}"
