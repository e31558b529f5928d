"""The back office's throughput with the card's bank over ISO 8583, beside the in-process
issuer, in the same run (issue 17).

Workload: ``CARDS`` cards x 4 taps on one day (flat fares), in batches of ``BATCH`` taps,
each batch one transaction on SQLite, then the day's close: per
card one account verification with its ARQC checked (``av:`` -> 0100) and one deferred
charge (``chg:`` -> 0200, authorized and captured at the bank), so 2 x ``CARDS``
requests to the bank.  The cards' cryptograms are made before the timing; every round
starts from a fresh database with the accounts open.

* baseline: ``TransactionCore`` with the in-process issuer (its rows written in the
  batch's transaction);
* over the wire: the same core with :class:`backoffice.acquirer.gateway.NetworkIssuer`
  against `tapsim issuer run` (a process, the same database file, group commit): every
  request's key written durably before it is sent (one transaction each), then its
  answer (another), one request at a time (the core is synchronous).

SQLite ``synchronous=FULL`` (an fsync per commit: about 5.6 ms on the machine measured) and
``normal`` (WAL: durable against a crash of the process, not of the machine), for both
sides, to show what the fsyncs cost.  Both timed by the wall clock (they wait on the disk
and the host), with the back office's CPU time beside and the host's CPU seconds
(``/proc/PID/stat``) for the wire run.  Run with ``-s`` to see the figures; they are kept in
the benchmark's extra_info, with the load average.
"""

from __future__ import annotations

import os
import statistics
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from backoffice.acquirer.gateway import NetworkIssuer
from backoffice.acquirer.mapping import AcquirerConfig
from backoffice.policy import AggregationPolicy, BackOfficeConfig
from backoffice.pricing import FlatFarePricer
from backoffice.service import TransactionCore
from backoffice.storage import open_store, sqlite_url
from backoffice.taps import TapRecord
from isolink.dialect import load_dialect
from tests.core_fixtures import (
    BANKS,
    KEK,
    MERCHANT,
    T0,
    TOKEN_KEY,
    TestCard,
    keystore,
    new_issuer,
    open_card,
    pan_for,
)
from tests.iso8583_support import Host, start_host

CARDS = 300
BATCH = 200
ROUNDS = 2


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _workload() -> tuple[list[TestCard], list[list[TapRecord]]]:
    cards = [TestCard(pan_for(30_000 + i), "sm4" if i % 2 else "tdes") for i in range(CARDS)]
    taps = [tc.tap(f"{i}-{k}", T0 + timedelta(hours=3 * k, seconds=i), operator="bus1")
            for k in range(4) for i, tc in enumerate(cards)]
    return cards, [taps[i:i + BATCH] for i in range(0, len(taps), BATCH)]


def _db(path: Path, cards: list[TestCard], sync: str) -> str:
    url = sqlite_url(str(path)) + f"?synchronous={sync}"
    store = open_store(url)
    issuer = new_issuer()
    for tc in cards:
        open_card(issuer, tc, balance=1_000_000)
    store.save_issuer(issuer.drain_changes())
    store.close()
    return url


def _config() -> BackOfficeConfig:
    return BackOfficeConfig(merchant_id=MERCHANT,
                            aggregation=AggregationPolicy(spend_limit=100_000))


def _run(core: TransactionCore, batches: list[list[TapRecord]]) -> tuple[float, float]:
    """(wall s, CPU s of this process) to ingest every batch and close the day."""
    wall, cpu = time.perf_counter(), time.process_time()
    for batch in batches:
        core.ingest(batch, batch[-1].time)
    core.close_due(T0 + timedelta(days=2))
    return time.perf_counter() - wall, time.process_time() - cpu


@pytest.mark.parametrize("sync", ["full", "normal"])
def test_bench_backoffice_through_the_iso8583_link(benchmark: Any, tmp_path: Path,
                                                   sync: str) -> None:
    os.environ["TAPSIM_KEK"] = KEK.hex()  # the host unwraps the cards' keys with it
    dialect = load_dialect()
    n_taps = CARDS * 4
    base: list[tuple[float, float]] = []
    for r in range(ROUNDS):  # the baseline, in the same run
        cards, batches = _workload()
        store = open_store(_db(tmp_path / f"base{r}.db", cards, sync))
        core = TransactionCore(store, FlatFarePricer(default=200), keystore(), BANKS,
                               TOKEN_KEY, _config())
        base.append(_run(core, batches))
        assert core.reconcile().ok
        store.close()

    wire: list[tuple[float, float, float]] = []
    state: dict[str, Any] = {}

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        cards, batches = _workload()
        path = tmp_path / f"wire{len(wire)}.db"
        url = _db(path, cards, sync)
        host = start_host(url, tmp_path, "--clock-from", T0.isoformat())
        store = open_store(url)
        gateway = NetworkIssuer(store, "127.0.0.1", host.port, dialect,
                                AcquirerConfig(timeout=10.0))
        core = TransactionCore(store, FlatFarePricer(default=200), keystore(), BANKS,
                               TOKEN_KEY, _config(), gateway)
        state.update(host=host, store=store, gateway=gateway, core=core)
        return (core, batches, host), {}

    def run(core: TransactionCore, batches: list[list[TapRecord]], host: Host) -> None:
        host_cpu = _cpu_s(host.proc.pid)
        wall, cpu = _run(core, batches)
        wire.append((wall, cpu, _cpu_s(host.proc.pid) - host_cpu))
        summary = state["gateway"].summary()
        assert summary["adapter"]["stood_in"] == 0, summary
        assert core.reconcile().ok, core.reconcile().problems
        state["gateway"].close()
        state["store"].close()
        host.stop()

    benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1)
    b_wall = statistics.median(w for w, _ in base)
    b_cpu = statistics.median(c for _, c in base)
    w_wall = statistics.median(w for w, _, _ in wire)
    w_cpu = statistics.median(c for _, c, _ in wire)
    h_cpu = statistics.median(h for _, _, h in wire)
    figures = {
        "taps": n_taps, "bank_requests": 2 * CARDS,
        "inprocess_taps_per_s_wall": round(n_taps / b_wall),
        "inprocess_taps_per_s_cpu": round(n_taps / b_cpu),
        "iso8583_taps_per_s_wall": round(n_taps / w_wall),
        "iso8583_taps_per_s_cpu": round(n_taps / w_cpu),
        "iso8583_backoffice_cpu_s": round(w_cpu, 3), "iso8583_host_cpu_s": round(h_cpu, 3),
        "iso8583_ms_per_request_wall": round(1000 * (w_wall - b_wall) / (2 * CARDS), 3),
        "load_average": round(os.getloadavg()[0], 2),
    }
    benchmark.extra_info.update(figures)
    print(f"\nback office, {n_taps} taps, {2 * CARDS} bank requests, SQLite synchronous={sync} "
          f"(medians of {ROUNDS}; load average {figures['load_average']}):")
    print(f"  in-process issuer: {figures['inprocess_taps_per_s_wall']:,} taps/s wall, "
          f"{figures['inprocess_taps_per_s_cpu']:,} per CPU second")
    print(f"  ISO 8583 issuer:   {figures['iso8583_taps_per_s_wall']:,} taps/s wall, "
          f"{figures['iso8583_taps_per_s_cpu']:,} per back-office CPU second; host CPU "
          f"{h_cpu:.2f} s; {figures['iso8583_ms_per_request_wall']} ms wall per request "
          "more than in process")
