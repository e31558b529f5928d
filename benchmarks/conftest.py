"""Shared helpers for the benchmarks: budgets are asserted here, never in unit tests."""

from __future__ import annotations

import time
from typing import Any

from emv.card.card import VirtualCard
from emv.kernel import Kernel, Send, TapResult, TerminalConfig, TransactionInput


def median_seconds(benchmark: Any) -> float:
    """Median of a finished pytest-benchmark run, in seconds."""
    return float(benchmark.stats.stats.median)


def split_tap(config: TerminalConfig, card: VirtualCard,
              txn: TransactionInput) -> tuple[float, float, TapResult]:
    """One tap as (terminal seconds, card seconds, result): the kernel's work and the card's
    timed apart, since on a bus the card's half runs on its own chip, not the validator."""
    card.power_on()
    clock = time.perf_counter
    t0 = clock()
    kernel = Kernel(config, txn)
    step = kernel.start()
    terminal = clock() - t0
    chip = 0.0
    while isinstance(step, Send):
        t1 = clock()
        response = card.process(step.apdu)
        t2 = clock()
        step = kernel.receive(response)
        terminal += clock() - t2
        chip += t2 - t1
    return terminal, chip, step.result
