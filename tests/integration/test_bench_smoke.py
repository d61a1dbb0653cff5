"""``python -m bench --quick`` runs end to end against a real stack and reports what it promises."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from simplu_grpc.devstack.postgres import PgServer

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = {
    "create_business",
    "seed_create",
    "get",
    "list",
    "update",
    "create",
    "get_concurrent",
    "cold_new_shard",
}


@pytest.mark.integration
@pytest.mark.slow
def test_quick_bench_reports_every_scenario_and_a_warm_path_without_citrus(
    pg: PgServer, tmp_path: Path
) -> None:
    """The quick bench exits 0, writes JSON with every scenario (no RPC errors), counts zero Citrus,
    DynamoDB and JWKS calls and one PostgreSQL round trip per warm request, and leaves no database
    or temporary directory behind. Not a timing assertion: latencies are only checked to exist."""
    out = tmp_path / "bench.json"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SIMPLU_", "CITRUS_", "COGNITO_", "DYNAMODB_", "GRPC_", "AWS_"))
    }
    env.update({"SIMPLU_BENCH_PG": pg.admin_dsn, "TMPDIR": str(scratch)})
    args = ["--quick", "--requests", "8", "--duration", "0.5", "--concurrency", "2", "--seed", "3"]
    result = subprocess.run(
        [sys.executable, "-m", "bench", *args, "--cold", "1", "--json", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())

    assert set(report["scenarios"]) >= SCENARIOS
    for name, scenario in report["scenarios"].items():
        assert scenario["errors"] == {}, name
        assert scenario["count"] >= 1, name
        assert {"p50", "p95", "p99"} <= set(scenario["latency_ms"]), name
    # The query scenarios also report the server's own duration of each call (its access log):
    # one per measured call, and never above the client's round trip of the same call.
    for name in ("filtered_list", "search", "statistics"):
        scenario = report["scenarios"][name]
        server = scenario["server_latency_ms"]
        assert server["count"] == scenario["count"], name
        assert 0 < server["p50"] <= scenario["latency_ms"]["p50"], name
        assert server["max"] <= scenario["latency_ms"]["max"], name
    assert "Server-side (the server's access-log duration" in result.stdout
    warm = report["warm_phase"]
    assert warm["citrus_request_path_calls"] == 0
    assert warm["citrus_calls"].get("get_shard", 0) == 0
    assert report["stack"]["metrics_available"] is True
    assert warm["dynamodb_request_path_calls"] == 0
    assert warm["jwks_calls"] == 0
    assert [s["kind"] for s in report["cold"]["samples"]].count("new_shard") == 1
    # DESIGN §1: one PostgreSQL round trip per warm request (a count from the wire, not a timing).
    assert report["pg_round_trips"]["per_request"] == {"get": 1.0, "list": 1.0, "update": 1.0, "create": 1.0}
    assert "GetResource warm, sequential" in result.stdout

    assert pg.list_databases(report["stack"]["db_prefix"]) == []
    for name, port in report["stack"]["ports"].items():
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, f"{name} still listening on {port}"
    assert list(scratch.iterdir()) == []


@pytest.mark.integration
@pytest.mark.slow
def test_quick_capacity_bench_checks_every_answer_through_the_server_metrics(
    pg: PgServer, tmp_path: Path
) -> None:
    """The quick capacity bench (echo server, a service process, the load generator) exits 0 and
    writes JSON with a ratio to echo, every request answered OK according to the server's own
    metrics, and the held-calls figures. Not a timing assertion: only that the figures exist."""
    out = tmp_path / "capacity.json"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SIMPLU_", "CITRUS_", "COGNITO_", "DYNAMODB_", "GRPC_", "AWS_"))
    }
    env.update({"SIMPLU_BENCH_PG": pg.admin_dsn, "TMPDIR": str(scratch)})
    args = [
        "--quick",
        "--rounds",
        "1",
        "--duration",
        "0.5",
        "--inflight",
        "2",
        "--rpcs",
        "get",
        "--no-workers",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "bench.capacity", *args, "--json", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    step = report["sweep"]["2"]
    assert step["echo"]["median_rps"] > 0
    assert step["get"]["ratio_to_echo"] > 0
    assert all(r["non_ok"] == {} for r in step["get"]["rounds"])
    answered = {t["target"]: t["met"] for t in report["targets"]}
    assert answered["every request answered OK (server metrics)"] is True
    assert report["held_calls"]["still_held"] == report["held_calls"]["held"]
    assert report["access_log_lines"]["1w"] > 0
    assert pg.list_databases(report["stack"]["db_prefix"]) == []
