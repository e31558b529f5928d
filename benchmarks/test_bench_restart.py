"""Restart time and memory of the transaction core after days of history (issue 15, item 4).

A city of ``CARDS`` cards (10,000; every card rides 4 times a day, flat fares, one account
verification, one deferred charge and capture a day, as the core writes them) is stored day
by day into one SQLite database, and after 1, 7 and 30 days the core is restarted on it:

* ``restart``: ``TransactionCore(store, ...)``, the back office and the issuer loaded
  (timed in CPU time of this process, ``time.process_time``, the wall clock beside it:
  ``wall_ms``), median of ``ROUNDS`` rounds; ``core_ms`` / ``issuer_ms`` the two halves;
* ``core_kib`` / ``issuer_kib``: memory held by the loaded back office and issuer
  (tracemalloc, in a round of its own), and ``core_bytes_per_card``.

The rows are bulk inserted (what the core and the in-process issuer write for those taps,
row for row, and the core's running totals and ATC windows where this version keeps them),
not made by running the core: a month of a city sets up in about a minute.  The last day's
aggregates are open, as at any moment of a running core.  The late-arrival horizon is the
default (7 days): the core's memory grows over the first week (the horizon's tap ids) and is
flat after it; restart time likewise.

The 1,000,000-card variant runs only with ``TAPSIM_BENCH_RESTART_BIG=1`` (two rides a card a
day, a 1-day horizon so that 3 days are past it; a few minutes a day of history to set up,
~1 GB of database a day and up to ~15 GB of memory; ``TAPSIM_BENCH_RESTART_BIG_DAYS``, default
``1,3``; ``TAPSIM_BENCH_RESTART_ROUNDS=1`` to time one restart)::

    TAPSIM_BENCH_RESTART_BIG=1 pytest benchmarks/test_bench_restart.py -k big -s

The same file runs against an older tapsim (one without the horizon) for the before
figures: it writes no totals or ATC-window rows there, and that core loads every tap.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from backoffice import engine
from backoffice.engine import BackOffice
from backoffice.ledger import ISSUER_SETTLEMENT, RECEIVABLE, REVENUE, Entry
from backoffice.policy import BackOfficeConfig
from backoffice.records import AggregateRow, CardRow, TapRow
from backoffice.service import TransactionCore
from backoffice.storage import SqlStore, open_store, sqlite_url
from backoffice.storage import issuer_rows as ir
from backoffice.storage.schema import TABLES
from issuer.codes import ResponseCode
from issuer.models import (
    Account,
    AccountStatus,
    AuthKind,
    AuthRecord,
    Capture,
    Card,
    CardState,
    Hold,
    HoldStatus,
    WrappedKey,
)
from issuer.service import Issuer
from tests.core_fixtures import BANKS, MERCHANT, TOKEN_KEY, flat_pricer, keystore

CARDS = int(os.environ.get("TAPSIM_BENCH_RESTART_CARDS", "10000"))
BIG_CARDS = 1_000_000
ROUNDS = int(os.environ.get("TAPSIM_BENCH_RESTART_ROUNDS", "3"))
DAY_US = 86_400 * 1_000_000
START = datetime(2026, 1, 5, tzinfo=UTC)  # day 0: 2026-01-05 (service days in UTC+8)
# Hours, minutes after day d's UTC midnight: 07:30, 08:10, 17:30, 18:10 in UTC+8 on day d + 1.
RIDES = ((23, 30), (24, 10), (33, 30), (34, 10))
FARE = 200
HAS_HORIZON = hasattr(engine, "TOTALS_KEY")  # this tapsim keeps running totals and a horizon
HAS_CARD_ATCS = any("card_atcs" in ddl for ddl in TABLES)
ARQC = "8f1c2d3e4a5b6c7d"
AC_DATA = "000000000000000000000000015600000000000156260302000000000100800003a00000"[:74]


def _token(c: int) -> str:
    return (c * 0x9E3779B97F4A7C15 % (1 << 128)).to_bytes(16, "big").hex()


def _us(t: datetime) -> int:
    return (t - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


@dataclasses.dataclass
class City:
    """A database growing by whole days of the synthetic city's history."""

    url: str
    cards: int
    horizon: timedelta
    rides: int = 4  # taps per card a day (the first ``rides`` of RIDES)
    days: int = 0  # days stored so far (the last one still open)

    @property
    def at(self) -> tuple[tuple[int, int], ...]:
        return RIDES[:self.rides]

    def config(self) -> BackOfficeConfig:
        if HAS_HORIZON:
            return BackOfficeConfig(merchant_id=MERCHANT, late_horizon=self.horizon)
        return BackOfficeConfig(merchant_id=MERCHANT)

    def _verified_at(self, d: int) -> datetime:
        """When day ``d``'s account verifications are made (after the first rides)."""
        return START + timedelta(days=d, hours=23, minutes=45)

    def _day(self, d: int) -> tuple[str, int]:
        day = (START + timedelta(days=d + 1)).date().isoformat()  # the rides' day in UTC+8
        return day, _us(START + timedelta(days=d))

    def setup_cards(self, store: SqlStore) -> None:
        opened = START - timedelta(days=60)
        key = WrappedKey("kek1", bytes(24))
        with store._tx():  # the bench writes rows as the core would
            for lo in range(0, self.cards, 50_000):
                accounts, cards = [], []
                for c in range(lo, min(lo + 50_000, self.cards)):
                    tok = _token(c)
                    accounts.append(ir.account_row(Account(
                        f"acct-{c}", "ICBC", "CNY", 1_000_000, 0, AccountStatus.OPEN, opened,
                        opened)))  # fmt: skip
                    cards.append(ir.card_row(Card(
                        tok, f"622202******{c % 10000:04d}", "01", f"acct-{c}", "ICBC", "tdes",
                        key, datetime(2030, 12, 31, tzinfo=UTC), CardState.ACTIVE,
                        opened)))  # fmt: skip
                store._bulk_insert("iss_accounts", ir.ACCOUNT_COLS, accounts)
                store._bulk_insert("iss_cards", ir.CARD_COLS, cards)

    def add_day(self, store: SqlStore) -> None:
        """Close the open day (its charges and captures) and store a new one, left open."""
        d = self.days
        day, day_us = self._day(d)
        with store._tx():
            if d:
                self._close_day(store, d - 1)
            for lo in range(0, self.cards, 50_000):
                taps: list[TapRow] = []
                entries: list[Entry] = []
                aggs: list[AggregateRow] = []
                auths: list[Any] = []
                for c in range(lo, min(lo + 50_000, self.cards)):
                    tok = _token(c)
                    agg = f"A:V{c % 2000:04d}-{c:08d}-{d:04d}-0"
                    for k, (h, m) in enumerate(self.at):
                        tap_id = f"V{c % 2000:04d}-{c:08d}-{d:04d}-{k}"
                        t_us = day_us + (h * 60 + m) * 60_000_000 + c % 600 * 1_000_000
                        taps.append(TapRow(
                            tap_id, tok, f"622202******{c % 10000:04d}", f"V{c % 2000:04d}",
                            "bus1", t_us, 28_800, day, f"S{k}", "R1", "tap", d * 4 + k + 1,
                            ARQC, AC_DATA, "tdes", "", "quickpass", FARE, "flat fare", agg,
                            t_us + 2_000_000))  # fmt: skip
                        entries.append(Entry("fare:" + tap_id, RECEIVABLE, REVENUE, "bus1", day,
                                             FARE, t_us))  # fmt: skip
                    first = taps[-self.rides]
                    aggs.append(AggregateRow(
                        agg, tok, day, first.time_us, first.time_us, first.tap_id, "", FARE, 1,
                        "open", "av:" + agg, 1, first.atc, ARQC, AC_DATA, None, None, "", None,
                        "", "[]"))  # fmt: skip
                    auths.append(ir.auth_row(AuthRecord(
                        "av:" + agg, tok, AuthKind.ACCOUNT_VERIFICATION, 0, "CNY", MERCHANT,
                        ResponseCode.APPROVED, frozenset(), self._verified_at(d), first.atc,
                        bytes.fromhex(ARQC), True, None, None)))  # fmt: skip
                store._bulk_insert("taps", TapRow._fields, taps)
                store._bulk_insert("ledger", Entry._fields, entries)
                store._bulk_insert("aggregates", AggregateRow._fields, aggs)
                store._bulk_insert("iss_auths", ir.AUTH_COLS, auths)
            self._current(store, d)
        self.days = d + 1

    def _close_day(self, store: SqlStore, d: int) -> None:
        day, _ = self._day(d)
        closed = START + timedelta(days=d + 1, hours=20)  # 04:00 in UTC+8, the next day
        total = FARE * self.rides
        store._execute(
            "UPDATE aggregates SET status = ?, total = ?, tap_count = ?, closed_us = ?, "
            "close_reason = ?, charge_ref = 'chg:' || aggregate_id, charge_code = ?, lines = ? "
            "WHERE service_day = ?",
            ("charged", total, self.rides, _us(closed), "service_day_end", "00",
             f'[["bus1","{day}",{total}]]', day),
        )  # fmt: skip
        # The approved deferred charge completes the day's verifications (as the issuer does).
        store._execute(
            "UPDATE iss_auths SET completed_by = 'chg:' || substr(request_id, 4) "
            "WHERE at_us = ? AND kind = ?",
            (_us(self._verified_at(d)), "account_verification"),
        )
        for lo in range(0, self.cards, 50_000):
            entries, auths, holds, caps = [], [], [], []
            for c in range(lo, min(lo + 50_000, self.cards)):
                tok = _token(c)
                agg = f"A:V{c % 2000:04d}-{c:08d}-{d:04d}-0"
                req, hold = "chg:" + agg, "H:chg:" + agg
                entries.append(Entry(req, ISSUER_SETTLEMENT, RECEIVABLE, "bus1", day, total,
                                     _us(closed)))  # fmt: skip
                auths.append(ir.auth_row(AuthRecord(
                    req, tok, AuthKind.DEFERRED, total, "CNY", MERCHANT, ResponseCode.APPROVED,
                    frozenset(), closed, None, None, True, "av:" + agg, hold)))  # fmt: skip
                holds.append(ir.hold_row(Hold(hold, f"acct-{c}", tok, MERCHANT, total, "CNY",
                                              closed, HoldStatus.CAPTURED, closed)))  # fmt: skip
                caps.append(ir.capture_row(Capture("cap:" + req, hold, f"acct-{c}", tok,
                                                   MERCHANT, total, "CNY", closed)))  # fmt: skip
            store._bulk_insert("ledger", Entry._fields, entries)
            store._bulk_insert("iss_auths", ir.AUTH_COLS, auths)
            store._bulk_insert("iss_holds", ir.HOLD_COLS, holds)
            store._bulk_insert("iss_captures", ir.CAPTURE_COLS, caps)

    def _current(self, store: SqlStore, d: int) -> None:
        """The per-card rows as of day ``d`` (open aggregate, fare state, ATC window) and the
        core's running totals, where this tapsim keeps them."""
        day, day_us = self._day(d)
        state = f"{day}|{FARE * self.rides}".encode().hex()  # the flat pricer's day spend
        upsert = ("INSERT INTO transit_cards ({}) VALUES ({}) ON CONFLICT (pan_token) DO UPDATE "
                  "SET fare_state = excluded.fare_state, "
                  "open_aggregate_id = excluded.open_aggregate_id").format(
            ", ".join(CardRow._fields), ", ".join("?" for _ in CardRow._fields))  # fmt: skip
        atc_high = d * 4 + self.rides
        for lo in range(0, self.cards, 50_000):
            rng = range(lo, min(lo + 50_000, self.cards))
            store._executemany(upsert, [CardRow(
                _token(c), f"622202******{c % 10000:04d}", state,
                f"A:V{c % 2000:04d}-{c:08d}-{d:04d}-0", 0) for c in rng])  # fmt: skip
            if HAS_CARD_ATCS:
                store._executemany(
                    "INSERT INTO card_atcs (pan_token, atc_high, atc_bits) VALUES (?, ?, ?) "
                    "ON CONFLICT (pan_token) DO UPDATE SET atc_high = excluded.atc_high, "
                    "atc_bits = excluded.atc_bits",
                    [(_token(c), atc_high, "f") for c in rng])
        if HAS_HORIZON:
            fares = FARE * self.rides * self.cards
            high = day_us + (self.at[-1][0] * 60 + self.at[-1][1]) * 60_000_000 + 599_000_000
            floor = (high - self.horizon // timedelta(microseconds=1)) // DAY_US * DAY_US
            totals = {"balances": {"first_ride_loss": 0, ISSUER_SETTLEMENT: fares * d,
                                   RECEIVABLE: fares, REVENUE: -fares * (d + 1)},
                      "fares_total": fares * (d + 1), "floor_us": floor}  # fmt: skip
            store._execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE "
                "SET value = excluded.value",
                (engine.TOTALS_KEY, json.dumps(totals, separators=(",", ":"))))


def _held(make: Callable[[], object]) -> int:
    """The bytes what ``make()`` returns still holds once made (tracemalloc)."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        obj = make()
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - base
        del obj
        return held
    finally:
        tracemalloc.stop()


# The two halves of a restart in a fresh process, memory as its resident set grows (the
# 1,000,000-card variant: tracemalloc's own bookkeeping would take more than the core).
_CHILD = """
import json, resource, sys, time
from backoffice.engine import BackOffice
from backoffice.storage import open_store
from issuer.service import Issuer
from tests.core_fixtures import BANKS, TOKEN_KEY, flat_pricer, keystore
from benchmarks.test_bench_restart import City
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()
city = City(sys.argv[1], int(sys.argv[2]), __import__("datetime").timedelta(days=int(sys.argv[3])))
store = open_store(city.url)
load_issuer = getattr(store, "load_issuer_open", store.load_issuer)
r0, t0 = rss(), time.process_time()
core = BackOffice(flat_pricer(), Issuer(keystore(), BANKS, TOKEN_KEY), city.config(), store.load())
r1, t1 = rss(), time.process_time()
issuer = Issuer(keystore(), BANKS, TOKEN_KEY, load_issuer())
r2, t2 = rss(), time.process_time()
print(json.dumps({"core_bytes": r1 - r0, "issuer_bytes": r2 - r1, "core_s": t1 - t0,
                  "issuer_s": t2 - t1, "open": len(core.open_aggregates())}))
"""


def _halves_in_child(city: City) -> tuple[int, int, int, float, float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, city.url, str(city.cards), str(city.horizon.days)],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    r = json.loads(out.strip().splitlines()[-1])
    return r["core_bytes"], r["issuer_bytes"], r["open"], r["core_s"], r["issuer_s"]


def _restart(city: City, benchmark: Any, days: int) -> dict[str, Any]:
    walls: list[float] = []
    parts: dict[str, list[float]] = {"core": [], "issuer": []}
    config = city.config()

    def restart() -> None:
        store = open_store(city.url)
        try:
            w = time.perf_counter()
            TransactionCore(store, flat_pricer(), keystore(), BANKS, TOKEN_KEY, config)
            walls.append(time.perf_counter() - w)
        finally:
            store.close()

    def halves() -> tuple[int, int, int]:
        store = open_store(city.url)
        # What TransactionCore loads of the issuer (an older tapsim: everything).
        load_issuer = getattr(store, "load_issuer_open", store.load_issuer)
        try:
            t = time.process_time()
            empty = Issuer(keystore(), BANKS, TOKEN_KEY)
            core = BackOffice(flat_pricer(), empty, config, store.load())
            parts["core"].append(time.process_time() - t)
            open_now = len(core.open_aggregates())
            del core
            t = time.process_time()
            Issuer(keystore(), BANKS, TOKEN_KEY, load_issuer())
            parts["issuer"].append(time.process_time() - t)
            iss_bytes = _held(lambda: Issuer(keystore(), BANKS, TOKEN_KEY, load_issuer()))
            core_bytes = _held(lambda: BackOffice(flat_pricer(), empty, config, store.load()))
            return core_bytes, iss_bytes, open_now
        finally:
            store.close()

    benchmark.pedantic(restart, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    memory = "tracemalloc"
    if city.cards >= BIG_CARDS:
        memory = "rss of a fresh process"
        core_bytes, iss_bytes, open_now, core_s, iss_s = _halves_in_child(city)
        parts["core"].append(core_s)
        parts["issuer"].append(iss_s)
    else:
        core_bytes, iss_bytes, open_now = halves()
    store = open_store(city.url)
    try:
        taps = store.count("taps")
    finally:
        store.close()
    info = {
        "days": days, "cards": city.cards, "stored_taps": taps, "open_aggregates": open_now,
        "horizon_days": city.horizon.days if HAS_HORIZON else None,
        "restart_ms": round(benchmark.stats.stats.median * 1e3, 1),
        "wall_ms": round(statistics.median(walls) * 1e3, 1),
        "core_ms": round(parts["core"][0] * 1e3, 1),
        "issuer_ms": round(parts["issuer"][0] * 1e3, 1),
        "core_kib": core_bytes // 1024, "issuer_kib": iss_bytes // 1024,
        "core_bytes_per_card": core_bytes // city.cards, "memory": memory,
    }  # fmt: skip
    benchmark.extra_info.update(info)
    print(f"\n{'bounded' if HAS_HORIZON else 'before'}: {info}")
    return info


cpu_timed = pytest.mark.benchmark(timer=time.process_time)


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Iterator[City]:
    path = tmp_path_factory.mktemp("restart") / "city.db"
    c = City(sqlite_url(path), CARDS, timedelta(days=7))
    store = open_store(c.url)
    try:
        c.setup_cards(store)
    finally:
        store.close()
    yield c


_seen: dict[int, dict[str, Any]] = {}


@cpu_timed
@pytest.mark.parametrize("days", [1, 7, 30])
def test_bench_restart_city(benchmark: Any, city: City, days: int) -> None:
    """10,000 cards: restart and memory after 1, 7 and 30 days (flat after the horizon)."""
    store = open_store(city.url)
    try:
        while city.days < days:
            city.add_day(store)
    finally:
        store.close()
    info = _seen[days] = _restart(city, benchmark, days)
    first = _seen.get(1)
    if first is not None and days > 1:
        benchmark.extra_info["restart_x_day1"] = round(info["restart_ms"] / first["restart_ms"], 2)
        benchmark.extra_info["core_memory_x_day1"] = round(info["core_kib"] / first["core_kib"], 2)
    assert info["open_aggregates"] == city.cards


BIG = os.environ.get("TAPSIM_BENCH_RESTART_BIG") == "1"
BIG_DAYS = [int(x) for x in os.environ.get("TAPSIM_BENCH_RESTART_BIG_DAYS", "1,3").split(",")]


@pytest.fixture(scope="module")
def big_city(tmp_path_factory: pytest.TempPathFactory) -> Iterator[City]:
    path = tmp_path_factory.mktemp("restart_big") / "city.db"
    c = City(sqlite_url(path), BIG_CARDS, timedelta(days=1), rides=2)
    store = open_store(c.url)
    try:
        c.setup_cards(store)
    finally:
        store.close()
    yield c


@pytest.mark.skipif(not BIG, reason="1,000,000 cards: set TAPSIM_BENCH_RESTART_BIG=1")
@cpu_timed
@pytest.mark.parametrize("days", BIG_DAYS)
def test_bench_restart_big(benchmark: Any, big_city: City, days: int) -> None:
    """1,000,000 cards, a 1-day horizon: restart and memory after ``BIG_DAYS`` days."""
    store = open_store(big_city.url)
    try:
        t = time.perf_counter()
        while big_city.days < days:
            big_city.add_day(store)
        print(f"\nset up to day {days} in {time.perf_counter() - t:.0f} s")
    finally:
        store.close()
    info = _restart(big_city, benchmark, days)
    assert info["open_aggregates"] == big_city.cards
