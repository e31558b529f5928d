"""End to end on loopback (issue 6): validator processes -> Mosquitto -> `tapsim backoffice
run` -> SQLite commit (synchronous=FULL).

* Tap-to-ledger latency at a steady 500 taps/s: four validator processes at 125 taps/s each
  (a journal write waits for its fsync; processes overlap those waits), paced on an absolute
  schedule (a late tap does not push the next ones back), each tapping a pool of 250 virtual
  cards in turn (riders: a card taps a few times a run, not hundreds of times a second)
  through the real kernel, journaling durably and publishing QoS 1 through the real uplink.
  A tap's latency runs from the moment its card was read (the record's time, the
  validator's clock) to the commit of the back office's batch holding it (the consumer's
  clock; same machine), and its part inside the back office from the message's arrival to
  the commit.  Reported as p50/p99 over every tap of the run; asserted: the offered rate
  holds, every tap reaches the ledger once, and the back office's part has p99 <= 250 ms
  (the whole is reported: on the shared 2-core machine its tail is the validators' and
  the other helpers' CPU, not the back office).
* Taps/s from one validator process, unpaced: from its first tap until its journal is all
  PUBACKed, and until the back office has committed all of it.  Asserted against the
  validator's own tapping rate in the same run: the link and the back office keep pace
  (>= 90 % of it); the rate itself is reported (a durable journal write per tap bounds it).

Each validator process is this module run as a script (``python -m benchmarks.test_bench_e2e
validator ...``): the real ``terminal.validator.Validator`` and ``terminal.uplink.Uplink``,
taps in a thread as ``tapsim terminal run`` does, with a pacing loop in place of a rider.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from backoffice.storage.urls import sqlite_url
from tests.fixtures.backoffice import bench_pans, issue_pans, journal_accepted
from tests.fixtures.mosquitto import Broker, broker_factory, mosquitto  # noqa: F401
from tests.fixtures.terminal import TOKEN_KEY

RATE = 500  # taps/s, all validators together
SECONDS = 10.0
BACK_OFFICE_P99_BUDGET_MS = 250.0
KEEP_PACE = 0.9
VALIDATORS = 4
CARDS_PER_VALIDATOR = 250
PROFILE = "unionpay-debit"


def pan_prefix(validator: int) -> str:
    return f"6222029{validator}"


# -- the validator process ---------------------------------------------------------------------

def validator_main(argv: list[str]) -> int:
    """One validator: taps at ``--rate`` (0: as fast as it can) for ``--taps``; prints JSON."""
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
    from tests.fixtures.backoffice import bench_pans

    p = argparse.ArgumentParser()
    p.add_argument("--id", required=True)
    p.add_argument("--card", required=True, help="profile")
    p.add_argument("--cards", type=int, default=1, help="this many cards, in turn")
    p.add_argument("--pan-prefix", default="")
    p.add_argument("--journal", type=Path, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--rate", type=float, default=0.0)
    p.add_argument("--taps", type=int, required=True)
    p.add_argument("--confirmed", action="store_true",
                   help="exit only when the back office confirmed every tap (ack/1)")
    args = p.parse_args(argv)

    journal = Journal(args.journal)
    import dataclasses

    profile = load_profile(args.card)
    cards = [VirtualCard(personalise(dataclasses.replace(profile, pan=pan)))
             for pan in bench_pans(args.pan_prefix, args.cards)]
    reader = VirtualReader(cards[0])
    config = ValidatorConfig(validator_id=args.id, stop_id="S01", route_id="1",
                             policy=TapPolicy(duplicate_window=dt.timedelta(0)))
    terminal = TerminalConfig(ca_keys=builtin_test_ca_keys(), token_key=TOKEN_KEY)
    settings = BrokerSettings(host="127.0.0.1", port=args.port,
                              client_id=validator_client_id(args.id))
    store = Journal(args.journal, lock=False, durable=False)
    uplink = Uplink(settings, store, args.id, max_rate=None)
    validator = Validator(config, terminal, journal, DenyList(),
                          on_journaled=lambda _r: uplink.notify())
    tap_s: list[float] = []
    late: list[float] = []

    def taps(start: float) -> None:
        for k in range(args.taps):
            if args.rate > 0:
                due = start + k / args.rate
                now = time.perf_counter()
                if due > now:
                    time.sleep(due - now)
                else:
                    late.append(now - due)
            reader.present(cards[k % len(cards)])
            t0 = time.perf_counter()
            event = validator.tap(reader)
            tap_s.append(time.perf_counter() - t0)
            assert event.record is not None

    async def main() -> dict[str, Any]:
        stop = asyncio.Event()
        link = asyncio.create_task(uplink.run(stop))
        await asyncio.wait_for(uplink.connected.wait(), 10)
        t0 = time.perf_counter()
        await asyncio.to_thread(taps, t0)
        tapped = time.perf_counter() - t0
        assert await uplink.drain(120)
        sent = time.perf_counter() - t0
        while args.confirmed and store.uncommitted_count():
            await asyncio.sleep(0.05)
        stop.set()
        await link
        return {"taps": len(tap_s), "tapping_s": tapped, "sent_s": sent,
                "tap_p99_ms": sorted(tap_s)[int(len(tap_s) * 0.99)] * 1e3,
                "late_p99_ms": (sorted(late)[int(len(late) * 0.99)] * 1e3) if late else 0.0,
                "published": uplink.stats.published}

    try:
        out = asyncio.run(main())
    finally:
        store.close()
        journal.close()
    print(json.dumps(out), flush=True)
    return 0


# -- the benchmarks ------------------------------------------------------------------------------

def _spawn(args: list[str], **kw: Any) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TAPSIM_TOKEN_KEY": TOKEN_KEY.hex()}
    return subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kw)


def _root() -> Path:
    return Path(__file__).resolve().parent.parent


class BackOffice:
    """`tapsim backoffice run` as a process; ``stop`` returns its summary (the ``--stats`` file
    when one is given, else the last line it prints)."""

    def __init__(self, broker: Broker, url: str, stats: Path | None = None,
                 extra: tuple[str, ...] = ()) -> None:
        self.stats = stats
        self.proc = _spawn(["-m", "tapsim.cli", "backoffice", "run", "--broker", broker.url,
                            "--db", url, "--json",
                            *(["--stats", str(stats)] if stats is not None else []), *extra],
                           cwd=_root())
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("ready:"), (line, self.proc.stderr.read()
                                           if self.proc.stderr else "")

    def stop(self) -> dict[str, Any]:
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, err
        text = self.stats.read_text() if self.stats is not None else out.strip().splitlines()[-1]
        return json.loads(text)  # type: ignore[no-any-return]


def _validators(tmp_path: Path, broker: Broker, rate: float, taps: int,
                count: int, extra: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    procs = [
        _spawn(["-m", "benchmarks.test_bench_e2e", "validator", "--id", f"B{i + 1}",
                "--card", PROFILE, "--cards", str(CARDS_PER_VALIDATOR),
                "--pan-prefix", pan_prefix(i + 1),
                "--journal", str(tmp_path / f"B{i + 1}.journal"),
                "--port", str(broker.port), "--rate", str(rate), "--taps", str(taps),
                *extra],
               cwd=_root())
        for i in range(count)
    ]
    out = []
    for proc in procs:
        stdout, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def _committed(url: str, want: set[str], timeout: float = 60.0) -> float:
    """Seconds until the core's database holds every tap id of ``want``."""
    from backoffice.storage import open_store

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        store = open_store(url)
        try:
            if want <= {r.tap_id for r in store.tap_rows()}:
                return time.perf_counter() - t0
        finally:
            store.close()
        time.sleep(0.05)
    raise AssertionError("not every tap reached the ledger")


@pytest.mark.service
def test_tap_to_ledger_latency_at_500_taps_per_second(benchmark: Any, mosquitto: Broker,  # noqa: F811
                                                      tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / 'bo.db')
    for i in range(VALIDATORS):
        issue_pans(url, TOKEN_KEY, PROFILE, bench_pans(pan_prefix(i + 1), CARDS_PER_VALIDATOR))
    bo = BackOffice(mosquitto, url, tmp_path / "stats.json")
    per = RATE / VALIDATORS
    try:
        runs = _validators(tmp_path, mosquitto, per, int(per * SECONDS), VALIDATORS)
        want: set[str] = set()
        for i in range(VALIDATORS):
            want |= journal_accepted(tmp_path / f"B{i + 1}.journal")
        _committed(url, want)
    finally:
        stats = bo.stop()
    offered = sum(r["taps"] for r in runs) / max(r["tapping_s"] for r in runs)
    lat = stats["tap_to_ledger_ms"]
    info = {"offered_taps_per_s": round(offered, 1), "taps": len(want),
            "tap_to_ledger_p50_ms": lat["p50"], "tap_to_ledger_p99_ms": lat["p99"],
            "tap_to_ledger_max_ms": lat["max"],
            "arrival_to_ledger_p50_ms": stats["arrival_to_ledger_ms"]["p50"],
            "arrival_to_ledger_p99_ms": stats["arrival_to_ledger_ms"]["p99"],
            "batches": stats["batches"],
            "taps_per_batch": round(stats["ingested"] / max(1, stats["batches"]), 1),
            "validator_tap_p99_ms": round(max(r["tap_p99_ms"] for r in runs), 3),
            "pacing_late_p99_ms": round(max(r["late_p99_ms"] for r in runs), 3)}
    benchmark.extra_info.update(info)
    print(f"\ne2e at {offered:.0f} taps/s offered ({len(want)} taps): tap to ledger p50 "
          f"{lat['p50']} ms, p99 {lat['p99']} ms, max {lat['max']} ms; {info}")
    benchmark.pedantic(lambda: None, rounds=1)
    assert stats["ingested"] == len(want) and lat["n"] == len(want)
    assert offered >= 0.95 * RATE
    assert stats["arrival_to_ledger_ms"]["p99"] <= BACK_OFFICE_P99_BUDGET_MS


@pytest.mark.service
def test_taps_per_second_from_one_validator_process(benchmark: Any, mosquitto: Broker,  # noqa: F811
                                                    tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / 'bo.db')
    issue_pans(url, TOKEN_KEY, PROFILE, bench_pans(pan_prefix(1), CARDS_PER_VALIDATOR))
    bo = BackOffice(mosquitto, url, tmp_path / "stats.json")
    n = 3000
    try:
        run = _validators(tmp_path, mosquitto, 0, n, 1)[0]
        want = journal_accepted(tmp_path / "B1.journal")
        # After the last PUBACK, until the database holds all (the process's exit counts too:
        # a lower bound on the rate to the ledger).
        ledger_s = run["sent_s"] + _committed(url, want)
    finally:
        stats = bo.stop()
    tap_rate = n / run["tapping_s"]
    sent_rate = n / run["sent_s"]
    ledger_rate = n / ledger_s
    benchmark.extra_info.update({"taps_per_s_tapped": round(tap_rate),
                                 "taps_per_s_puback": round(sent_rate),
                                 "taps_per_s_to_ledger_at_most": round(ledger_rate),
                                 "tap_p99_ms": round(run["tap_p99_ms"], 3)})
    print(f"\none validator process: {tap_rate:.0f} taps/s tapped (kernel + journal), "
          f"{sent_rate:.0f} taps/s until all PUBACKed, >= {ledger_rate:.0f} taps/s until all "
          f"committed by the back office (p50 {stats['tap_to_ledger_ms']['p50']} ms)")
    benchmark.pedantic(lambda: None, rounds=1)
    assert len(want) == n and stats["ingested"] == n
    assert sent_rate >= KEEP_PACE * tap_rate and ledger_rate >= KEEP_PACE * tap_rate


if __name__ == "__main__":
    if sys.argv[1:2] != ["validator"]:
        sys.exit("usage: python -m benchmarks.test_bench_e2e validator --id ID --card NAME "
                 "--journal FILE --port PORT --taps N [--rate R]")
    sys.exit(validator_main(sys.argv[2:]))
