"""Latency summaries (nearest-rank percentiles) and the plain-text table printed on stdout."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from bench.load import Samples

PERCENTILES = (50, 95, 99)


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values (0.0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_summary(latencies_ms: Sequence[float]) -> dict[str, float]:
    values = sorted(latencies_ms)
    summary = {f"p{p}": round(percentile(values, p), 3) for p in PERCENTILES}
    summary["mean"] = round(sum(values) / len(values), 3) if values else 0.0
    summary["min"] = round(values[0], 3) if values else 0.0
    summary["max"] = round(values[-1], 3) if values else 0.0
    return summary


def scenario_result(description: str, samples: Samples, **extra: Any) -> dict[str, Any]:
    """One scenario in the JSON report."""
    ok = len(samples.latencies_ms)
    result: dict[str, Any] = {
        "description": description,
        "count": ok,
        "errors": dict(samples.errors),
        "elapsed_s": round(samples.elapsed_s, 3),
        "throughput_rps": round(ok / samples.elapsed_s, 1) if samples.elapsed_s > 0 else 0.0,
        "latency_ms": latency_summary(samples.latencies_ms),
    }
    if samples.first_error:
        result["first_error"] = samples.first_error
    result.update(extra)
    return result


def _ms(value: float) -> str:
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def table(scenarios: dict[str, dict[str, Any]]) -> str:
    """The scenarios as an aligned text table."""
    header = ("scenario", "n", "err", "p50 ms", "p95 ms", "p99 ms", "max ms", "req/s")
    rows = [header]
    for result in scenarios.values():
        lat = result["latency_ms"]
        rows.append(
            (
                result["description"],
                str(result["count"]),
                str(sum(result["errors"].values())),
                _ms(lat["p50"]),
                _ms(lat["p95"]),
                _ms(lat["p99"]),
                _ms(lat["max"]),
                f"{result['throughput_rps']:.0f}" if result.get("show_throughput", True) else "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [cell.rjust(widths[i]) for i, cell in enumerate(row) if i]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
