"""Shared helpers for the benchmarks: budgets are asserted here, never in unit tests."""

from __future__ import annotations

from typing import Any


def median_seconds(benchmark: Any) -> float:
    """Median of a finished pytest-benchmark run, in seconds."""
    return float(benchmark.stats.stats.median)
