"""What reading evicted cards back costs a batch (issue 15, backoffice/README.md "Cards.").

Cards idle past the late-arrival floor leave the core's memory (``backoffice/idle.py``); before
each batch :class:`~backoffice.service.TransactionCore` reads the cards of its taps it does not
hold with one ``Store.load_cards`` query and takes them back (``idle.adopt``).  Measured here,
on a store holding 200,000 cards (each with a fare state and an ATC window), for a 1,000-tap
batch: 50 and 200 of its cards read back, and 50 and 1,000 new cards (the query finds
nothing).  The baseline, in the same run on the same backend: a whole durable 1,000-tap batch
of test_bench_core.py's ``mtt_week`` workload through ``TransactionCore.ingest`` (its first
five batches on a fresh database: every card new, so each batch also pays its look-up).
Medians of 5, CPU time of this process with the wall clock beside it.  Reported, no target;
the assertions hold what was read back.
"""

from __future__ import annotations

import secrets
import statistics
import time
from pathlib import Path
from typing import Any

import pytest

from backoffice.engine import BackOffice
from backoffice.idle import adopt
from backoffice.records import CardAtcRow, CardRow, Changes
from backoffice.service import TransactionCore
from benchmarks.test_bench_branch_check import fresh_store
from benchmarks.test_bench_core import pricer, workload
from tests.core_fixtures import (
    BANKS,
    TOKEN_KEY,
    config,
    flat_pricer,
    keystore,
    new_issuer,
)

STORED = 200_000
ROUNDS = 5
CASES = (("50 cards read back", 50, True), ("200 cards read back", 200, True),
         ("50 new cards (found nothing)", 50, False), ("1,000 new cards", 1_000, False))


def _median(samples: list[tuple[float, float]]) -> tuple[float, float]:
    return (statistics.median(c for c, _ in samples), statistics.median(w for _, w in samples))


def _batch_baseline(backend: str, tmp_path: Path) -> tuple[float, float]:
    batches = workload("mtt_week").batches()[:ROUNDS]
    out: list[tuple[float, float]] = []
    with fresh_store(backend, tmp_path) as store:
        core = TransactionCore(store, pricer(), keystore(), BANKS, TOKEN_KEY,
                               workload("mtt_week").config())  # fmt: skip
        w = workload("mtt_week")
        w.open_accounts(core.issuer)
        store.save_issuer(core.issuer.drain_changes())
        core.refresh()
        for batch in batches:
            c0, w0 = time.process_time(), time.perf_counter()
            core.ingest(batch, batch[-1].time)
            out.append((time.process_time() - c0, time.perf_counter() - w0))
    return _median(out)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_bench_reading_evicted_cards_back(benchmark: Any, backend: str, tmp_path: Path) -> None:
    base_cpu, base_wall = _batch_baseline(backend, tmp_path)
    with fresh_store(backend, tmp_path) as store:
        tokens = [secrets.token_hex(16) for _ in range(STORED)]
        state = secrets.token_hex(150)  # about a decoded fare state's stored size
        rows = [CardRow(t, "6200****0000", state, None, 0) for t in tokens]
        store.commit(Changes(cards=rows, card_atcs=[CardAtcRow(t, 40, "ffffffff") for t in tokens]))
        core = BackOffice(flat_pricer(), new_issuer(), config())
        lines = []

        def all_cases() -> None:
            for label, k, stored in CASES:
                times: list[tuple[float, float]] = []
                for r in range(ROUNDS):
                    want = (tokens[r * 1_000:r * 1_000 + k] if stored
                            else [secrets.token_hex(16) for _ in range(k)])  # fmt: skip
                    core.cards.clear()
                    c0, w0 = time.process_time(), time.perf_counter()
                    taken = adopt(core, store.load_cards(sorted(want)))
                    times.append((time.process_time() - c0, time.perf_counter() - w0))
                    assert taken == (k if stored else 0)
                    assert all(core.cards[t].atc_high == 40 for t in want) if stored else True
                cpu, wall = _median(times)
                benchmark.extra_info[f"{label} cpu_ms"] = round(cpu * 1e3, 2)
                lines.append(f"  {label}: {cpu * 1e3:.2f} ms CPU ({wall * 1e3:.2f} wall)")

        benchmark.pedantic(all_cases, rounds=1, iterations=1)
    benchmark.extra_info.update(batch_cpu_ms=round(base_cpu * 1e3, 1),
                                batch_wall_ms=round(base_wall * 1e3, 1))  # fmt: skip
    print(f"\n{backend}, {STORED:,} cards stored, a 1,000-tap batch (median of {ROUNDS}):")
    print("\n".join(lines))
    print(f"  baseline, a whole durable 1,000-tap batch (mtt_week): {base_cpu * 1e3:.1f} ms CPU "
          f"({base_wall * 1e3:.1f} wall)")
