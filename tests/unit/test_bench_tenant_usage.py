"""bench/tenant_usage.py runs (its figures are the bench's to report; no speed is asserted here)."""

from __future__ import annotations

import math

from bench.tenant_usage import micro


def test_micro_benchmarks_report_every_figure() -> None:
    """A tiny run of the micro-benchmarks reports each figure as a finite number of ns."""
    figures = micro(200)
    assert set(figures) == {
        "hook_ns",
        "run_with_tracking_ns",
        "run_with_ignore_load_ns",
        "run_before_tracking_ns",
        "record_warm_tenant_ns",
        "record_new_tenant_full_sketch_ns",
    }
    assert all(math.isfinite(value) for value in figures.values())
    assert figures["record_warm_tenant_ns"] > 0
