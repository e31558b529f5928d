"""End-to-end acknowledgements on loopback (issue 12): what the confirmation costs.

* Tap-to-commit-ack latency at a steady 500 taps/s: four validator processes at 125 taps/s
  each (benchmarks/test_bench_e2e.py's paced validators: real kernel, durable journal, real
  uplink), `tapsim backoffice run` committing to SQLite.  A tap's latency runs from the
  moment its card was read (``created_us`` in the validator's journal) to the moment the
  back office's ``ack/1`` naming it was applied to that journal (``committed_us``; same
  machine, same clock).  p50/p99 over every tap of the run.
* Uplink taps/s with the acknowledgements on, beside the figure without them, in the same
  run: one validator with a backlog of journaled taps (the link was down) drains it to the
  back office; timed from the uplink's start until every tap is committed (off: the ledger
  holds all, polled; on: the validator holds every tap confirmed, which comes later still).
  Alternated off, on three times; the best run of each is compared.  Asserted: the
  acknowledgements cost at most 20 % of the throughput.  Wall clock, with the validator
  process's CPU seconds beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import resource
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from backoffice.storage import sqlite_url
from benchmarks.test_bench_e2e import (
    CARDS_PER_VALIDATOR,
    PROFILE,
    RATE,
    VALIDATORS,
    BackOffice,
    _root,
    _spawn,
    _validators,
    pan_prefix,
)
from tests.fixtures.backoffice import bench_pans, issue_pans, journal_accepted
from tests.fixtures.mosquitto import Broker, broker_factory, mosquitto  # noqa: F401
from tests.fixtures.terminal import TOKEN_KEY

SECONDS = 8.0
BACKLOG = 2000
MAX_COST = 0.20  # the acknowledgements may cost at most this share of the throughput
PAIRS = 3  # off/on alternations: the machine is shared, the best run of each is compared


def ack_latencies_ms(journal: Path) -> list[float]:
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT committed_us - created_us FROM taps "
                          "WHERE committed_us IS NOT NULL").fetchall()
        missing = db.execute("SELECT COUNT(*) FROM taps WHERE committed_us IS NULL").fetchone()
    finally:
        db.close()
    assert missing[0] == 0, f"{journal}: {missing[0]} taps never confirmed"
    return [us / 1e3 for (us,) in rows]


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * p))], 2)


def wait_confirmed(journals: list[Path], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = 0
        for j in journals:
            db = sqlite3.connect(f"file:{j}?mode=ro", uri=True)
            try:
                left += db.execute("SELECT COUNT(*) FROM taps WHERE committed_us IS NULL"
                                   ).fetchone()[0]
            finally:
                db.close()
        if left == 0:
            return
        time.sleep(0.1)
    raise AssertionError("taps still unconfirmed")


@pytest.mark.service
def test_tap_to_commit_ack_latency_at_500_taps_per_second(
        benchmark: Any, mosquitto: Broker, tmp_path: Path) -> None:  # noqa: F811
    url = sqlite_url(tmp_path / "bo.db")
    for i in range(VALIDATORS):
        issue_pans(url, TOKEN_KEY, PROFILE, bench_pans(pan_prefix(i + 1), CARDS_PER_VALIDATOR))
    bo = BackOffice(mosquitto, url)
    per = RATE / VALIDATORS
    journals = [tmp_path / f"B{i + 1}.journal" for i in range(VALIDATORS)]
    try:
        # Each validator exits once the back office confirmed every one of its taps.
        runs = _validators(tmp_path, mosquitto, per, int(per * SECONDS), VALIDATORS,
                           ("--confirmed",))
        wait_confirmed(journals)
    finally:
        stats = bo.stop()
    lat: list[float] = []
    for j in journals:
        lat += ack_latencies_ms(j)
    offered = sum(r["taps"] for r in runs) / max(r["tapping_s"] for r in runs)
    info = {"offered_taps_per_s": round(offered, 1), "taps": len(lat),
            "tap_to_commit_ack_p50_ms": pct(lat, 0.5), "tap_to_commit_ack_p99_ms": pct(lat, 0.99),
            "tap_to_ledger_p50_ms": stats["tap_to_ledger_ms"]["p50"],
            "tap_to_ledger_p99_ms": stats["tap_to_ledger_ms"]["p99"],
            "commit_acks": stats["commit_acks"]}
    benchmark.extra_info.update(info)
    print(f"\ncommit acks at {offered:.0f} taps/s ({len(lat)} taps): tap to commit ack p50 "
          f"{info['tap_to_commit_ack_p50_ms']} ms, p99 {info['tap_to_commit_ack_p99_ms']} ms "
          f"(tap to ledger p50 {info['tap_to_ledger_p50_ms']} ms, p99 "
          f"{info['tap_to_ledger_p99_ms']} ms); {info}")
    benchmark.pedantic(lambda: None, rounds=1)
    accepted: set[str] = set()
    for j in journals:
        accepted |= journal_accepted(j)
    assert len(accepted) == len(lat) == stats["ingested"]
    assert offered >= 0.95 * RATE


@pytest.mark.service
def test_uplink_throughput_with_and_without_commit_acks(
        benchmark: Any, broker_factory: Any, tmp_path: Path) -> None:  # noqa: F811
    results: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    for k, acks in enumerate([False, True] * PAIRS):
        b = broker_factory()
        url = sqlite_url(tmp_path / f"bo{k}.db")
        issue_pans(url, TOKEN_KEY, PROFILE, bench_pans(pan_prefix(1), CARDS_PER_VALIDATOR))
        bo = BackOffice(b, url, extra=() if acks else ("--no-commit-acks",))
        try:
            proc = _spawn(["-m", "benchmarks.test_bench_commits", "drain", "--id", f"T{k}",
                           "--journal", str(tmp_path / f"T{k}.journal"), "--port", str(b.port),
                           "--taps", str(BACKLOG), "--ledger", url,
                           *(["--acks"] if acks else [])], cwd=_root())
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err[-3000:]
        finally:
            stats = bo.stop()
        run = json.loads(out.strip().splitlines()[-1])
        assert stats["ingested"] == BACKLOG
        results[acks].append(run)
        b.stop()
    off = max(results[False], key=lambda r: r["taps_per_s"])
    on = max(results[True], key=lambda r: r["taps_per_s"])
    info = {"taps_per_s_acks_off": off["taps_per_s"], "taps_per_s_acks_on": on["taps_per_s"],
            "ratio_on_off": round(on["taps_per_s"] / off["taps_per_s"], 3),
            "validator_cpu_s_off": off["cpu_s"], "validator_cpu_s_on": on["cpu_s"],
            "wall_s_off": off["wall_s"], "wall_s_on": on["wall_s"],
            "all_pubacked_s_off": off["all_pubacked_s"], "all_pubacked_s_on": on["all_pubacked_s"],
            "all_runs": {("on" if k else "off"): [r["taps_per_s"] for r in v]
                         for k, v in results.items()}}
    benchmark.extra_info.update(info)
    print(f"\nuplink drain of {BACKLOG} taps: {off['taps_per_s']} taps/s to the ledger without "
          f"commit acks, {on['taps_per_s']} taps/s to confirmed with them "
          f"(ratio {info['ratio_on_off']}); {info}")
    benchmark.pedantic(lambda: None, rounds=1)
    assert on["taps_per_s"] >= (1 - MAX_COST) * off["taps_per_s"]


# -- the validator process for the drain --------------------------------------------------------

def drain_main(argv: list[str]) -> int:
    """Journal ``--taps`` taps with the link down, then time the uplink's drain."""
    from emv.card.card import VirtualCard
    from emv.card.image import personalise
    from emv.card.profile import load_profile
    from emv.kernel import TerminalConfig
    from emv.oda import builtin_test_ca_keys
    from terminal.decisions import TapPolicy
    from terminal.denylist import DenyList
    from terminal.journal import Journal
    from terminal.readers import VirtualReader
    from terminal.uplink import BrokerSettings, Uplink, validator_client_id
    from terminal.validator import Validator, ValidatorConfig

    p = argparse.ArgumentParser()
    p.add_argument("--id", required=True)
    p.add_argument("--journal", type=Path, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--taps", type=int, required=True)
    p.add_argument("--ledger", help="database URL to poll (acks off: the end condition)")
    p.add_argument("--acks", action="store_true")
    args = p.parse_args(argv)

    journal = Journal(args.journal)
    profile = load_profile(PROFILE)
    cards = [VirtualCard(personalise(dataclasses.replace(profile, pan=pan)))
             for pan in bench_pans(pan_prefix(1), CARDS_PER_VALIDATOR)]
    reader = VirtualReader(cards[0])
    validator = Validator(
        ValidatorConfig(validator_id=args.id, stop_id="S01", route_id="1",
                        policy=TapPolicy(duplicate_window=dt.timedelta(0))),
        TerminalConfig(ca_keys=builtin_test_ca_keys(), token_key=TOKEN_KEY), journal,
        DenyList())
    for k in range(args.taps):
        reader.present(cards[k % len(cards)])
        assert validator.tap(reader).record is not None
    ids = {e.tap_id for e in journal.entries()}
    store = Journal(args.journal, lock=False, durable=False)
    uplink = Uplink(BrokerSettings(host="127.0.0.1", port=args.port,
                                   client_id=validator_client_id(args.id)),
                    store, args.id, max_rate=None, commit_acks=args.acks)

    def in_ledger() -> bool:
        from backoffice.storage import open_store

        db = open_store(args.ledger)
        try:
            return ids <= {r.tap_id for r in db.tap_rows(ids)}
        finally:
            db.close()

    async def main() -> dict[str, Any]:
        stop = asyncio.Event()
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        link = asyncio.create_task(uplink.run(stop))
        sent = None
        while True:
            if sent is None and store.unsent_count() == 0:
                sent = time.perf_counter() - t0
            if args.acks:
                if store.uncommitted_count() == 0:
                    break
            elif store.unsent_count() == 0 and (args.ledger is None
                                                or await asyncio.to_thread(in_ledger)):
                break
            await asyncio.sleep(0.02)
        wall = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        stop.set()
        await link
        cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        n = max(1, len(ids))
        return {"taps": len(ids), "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
                "taps_per_s": round(n / wall, 1), "committed": uplink.stats.committed,
                "all_pubacked_s": round(sent or wall, 3)}

    try:
        out = asyncio.run(main())
    finally:
        store.close()
        journal.close()
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] != ["drain"]:
        sys.exit("usage: python -m benchmarks.test_bench_commits drain --id ID --journal FILE "
                 "--port PORT --taps N [--ledger URL] [--acks]")
    sys.exit(drain_main(sys.argv[2:]))
