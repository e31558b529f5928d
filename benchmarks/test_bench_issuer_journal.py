"""What the bank's journal rows cost the in-memory core (issuer/README.md, "Journal").

The ODA day of ``test_bench_core`` (6,000 cards x 4 taps, flat fares, one deferred charge a
card: a hold, a capture) run twice in the same session: with the journal rows the issuer now
writes for every hold, capture and release, and with ``Issuer._journal`` made a no-op (the
core as it was before the journal).  CPU time (``time.process_time``) with the wall clock
beside it, medians of 3 rounds; and the same day durable on SQLite (wall clock, the rows
every commit writes), medians of 2 rounds::

    PYTHONPATH=. pytest benchmarks/test_bench_issuer_journal.py -q -s
"""

from __future__ import annotations

import gc
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from backoffice.engine import BackOffice
from backoffice.service import TransactionCore
from backoffice.storage import SqlStore, open_store, sqlite_url
from benchmarks.test_bench_core import pricer, run_memory, workload
from issuer.service import Issuer
from tests.core_fixtures import BANKS, TOKEN_KEY, keystore, new_issuer

RATES: dict[str, float] = {}


def _run(benchmark: Any, label: str) -> float:
    w = workload("oda_day")
    batches = w.batches()
    walls: list[float] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        issuer = new_issuer()
        w.open_accounts(issuer)
        issuer.drain_changes()
        bo = BackOffice(pricer(), issuer, w.config())
        gc.collect()
        gc.freeze()
        return (bo,), {}

    def run(bo: BackOffice) -> None:
        t = time.perf_counter()
        run_memory(bo, batches, w.end)
        walls.append(time.perf_counter() - t)

    try:
        benchmark.pedantic(run, setup=setup, rounds=3, iterations=1)
    finally:
        gc.unfreeze()
    rate = len(w.taps) / benchmark.stats.stats.median
    RATES[label] = rate
    print(f"\n{label}: {rate:,.0f} taps/s CPU time, "
          f"{len(w.taps) / statistics.median(walls):,.0f} wall clock (medians of 3 rounds)")
    return rate


@pytest.mark.benchmark(timer=time.process_time, group="issuer-journal")
def test_bench_core_without_journal_rows(benchmark: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The baseline: the same core with the issuer's journal rows switched off."""
    monkeypatch.setattr(Issuer, "_journal", lambda self, *args: None)
    assert _run(benchmark, "oda_day, no journal rows (baseline)") > 0


@pytest.mark.benchmark(timer=time.process_time, group="issuer-journal")
def test_bench_core_with_journal_rows(benchmark: Any) -> None:
    rate = _run(benchmark, "oda_day, journal rows")
    base = RATES.get("oda_day, no journal rows (baseline)")
    if base:
        print(f"journal rows: {rate / base:.1%} of the baseline's throughput")
    assert rate > 0


def _durable(benchmark: Any, tmp_path: Path, label: str) -> float:
    """The ODA day through TransactionCore on SQLite: the rows written per commit."""
    w = workload("oda_day")
    batches = w.batches()
    cpus: list[float] = []
    stores: list[SqlStore] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        store = open_store(sqlite_url(tmp_path / f"{uuid.uuid4().hex}.db"))
        stores.append(store)
        core = TransactionCore(store, pricer(), keystore(), BANKS, TOKEN_KEY, w.config())
        core.run(lambda: w.open_accounts(core.issuer))
        return (core,), {}

    def run(core: TransactionCore) -> None:
        t = time.process_time()
        for batch in batches:
            core.ingest(batch, batch[-1].time)
        core.close_due(w.end)
        cpus.append(time.process_time() - t)

    try:
        benchmark.pedantic(run, setup=setup, rounds=2, iterations=1)
    finally:
        for store in stores:
            store.close()
    rate = len(w.taps) / benchmark.stats.stats.median
    RATES[label] = rate
    print(f"\n{label}: {rate:,.0f} taps/s wall clock (the database's time counts), "
          f"{len(w.taps) / statistics.median(cpus):,.0f} taps/s CPU time of this process, "
          "medians of 2 rounds")
    return rate


@pytest.mark.benchmark(group="issuer-journal-sqlite")
def test_bench_durable_sqlite_without_journal_rows(
    benchmark: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Issuer, "_journal", lambda self, *args: None)
    assert _durable(benchmark, tmp_path, "oda_day SQLite, no journal rows (baseline)") > 0


@pytest.mark.benchmark(group="issuer-journal-sqlite")
def test_bench_durable_sqlite_with_journal_rows(benchmark: Any, tmp_path: Path) -> None:
    rate = _durable(benchmark, tmp_path, "oda_day SQLite, journal rows")
    base = RATES.get("oda_day SQLite, no journal rows (baseline)")
    if base:
        print(f"journal rows on SQLite: {rate / base:.1%} of the baseline's throughput")
    assert rate > 0
