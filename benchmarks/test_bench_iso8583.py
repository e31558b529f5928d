"""The issuer over ISO 8583 on loopback (issue 17): capacity, and latency under open-loop load.

* Authorizations per second through the link: `tapsim issuer run` (a process, SQLite,
  synchronous=FULL, group commit) answering 0100 account verifications with real ARQCs
  from 16 cards; the client keeps ``WINDOW`` requests outstanding on each of
  ``CONNECTIONS`` connections (closed loop: the host is never idle), timed from the first
  send to the last answer.  The host's CPU seconds (``/proc/PID/stat``) beside the wall
  clock.  Baseline in the same run: the same requests through the same code without the
  link (decode, ``IssuerHandler``, encode, one ``save_issuer`` per 1,024), in process.
* One request at a time on one connection (nothing else in flight): the median round trip,
  the floor under the latencies below.
* `tapsim load iso8583` against the same host at 50 % and 90 % of the capacity just
  measured: open loop (Poisson), latency from the scheduled send, p50/p95/p99/max.

Target: >= 5,000 authorizations/s through the link (issue 17), checked per second of the
host's CPU time (the machine is shared), the wall-clock rate beside it.  Printed and kept
in the benchmark's extra_info; run with ``-s`` to see them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from backoffice.branch import BUILTIN_BANKS, TEST_KEK, key_store
from backoffice.storage import open_store, sqlite_url
from emv.card.profile import load_profile
from emv.pan import pan_token
from isolink.dialect import load_dialect
from isolink.framing import FrameReader
from isolink.load import LoadSettings, plan
from isolink.taps import CardTapper, profile_cards
from issuer.service import Issuer
from issuerhost.handler import IssuerHandler
from tapsim.commands.tap import token_key
from tests.fixtures.backoffice import issue_pans
from tests.iso8583_support import ROOT, start_host

PROFILE = "sscard3"
CARDS = 16
REQUESTS = 16_000
CONNECTIONS = 4
WINDOW = 64  # outstanding requests per connection in the capacity run
LOAD_SECONDS = 5.0
TARGET_PER_S = 5_000


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _requests(n: int, atc_from: int) -> list[bytes]:
    dialect = load_dialect()
    cards = profile_cards(load_profile(PROFILE), CARDS)
    tappers = [CardTapper(c, atc_from=atc_from) for c in cards]
    settings = LoadSettings("127.0.0.1", 1, rate=n, duration=1.0, arrivals="fixed")
    planned = plan(dialect, tappers, [pan_token(c.pan, token_key()) for c in cards], settings)
    return [p.data for p in planned]


async def _closed_loop(port: int, framed: list[bytes]) -> tuple[float, dict[str, int]]:
    """Every request answered, ``WINDOW`` outstanding per connection; (wall s, codes)."""
    dialect = load_dialect()
    per_conn = [framed[i::CONNECTIONS] for i in range(CONNECTIONS)]
    codes: dict[str, int] = {}

    async def one(requests: list[bytes]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        frames = FrameReader()
        sent = min(WINDOW, len(requests))
        writer.write(b"".join(requests[:sent]))
        done = 0
        while done < len(requests):
            data = await reader.read(65536)
            assert data, "the host closed the connection"
            answers = frames.receive_data(data)
            for a in answers:
                code = dialect.decode(a)["39"]
                codes[code] = codes.get(code, 0) + 1
            done += len(answers)
            more = requests[sent:sent + len(answers)]
            if more:
                writer.write(b"".join(more))
                sent += len(more)
        writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(one(r) for r in per_conn))
    return time.perf_counter() - t0, codes


async def _one_at_a_time(port: int, framed: list[bytes]) -> float:
    """Median milliseconds of a request answered with nothing else in flight."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    frames = FrameReader()
    times = []
    for raw in framed:
        t0 = time.perf_counter()
        writer.write(raw)
        got: list[bytes] = []
        while not got:
            got = frames.receive_data(await reader.read(65536))
        times.append(time.perf_counter() - t0)
    writer.close()
    return sorted(times)[len(times) // 2] * 1000


def _in_process(db: Path, framed: list[bytes]) -> tuple[float, float]:
    """(CPU s, wall s) of the same requests through the same code, without the link."""
    dialect = load_dialect()
    store = open_store(sqlite_url(db))
    try:
        issuer = Issuer(key_store(TEST_KEK), BUILTIN_BANKS, token_key(), store.load_issuer())
        handler = IssuerHandler(issuer, dialect, lambda: dt.datetime.now(dt.UTC))
        c0, w0 = time.process_time(), time.perf_counter()
        for i in range(0, len(framed), 1024):
            for raw in framed[i:i + 1024]:
                fields = dialect.decode(raw[2:])
                answer = handler.handle(fields)
                assert answer["39"] == "00", answer
                dialect.encode(answer)
            store.save_issuer(issuer.drain_changes())
        return time.process_time() - c0, time.perf_counter() - w0
    finally:
        store.close()


def _load(port: int, rate: float, atc_from: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-m", "tapsim.cli", "load", "iso8583", "--target", f"127.0.0.1:{port}",
         "--rate", f"{rate:.0f}", "--duration", str(LOAD_SECONDS), "--card", PROFILE,
         "--cards", str(CARDS), "--connections", str(CONNECTIONS), "--atc-from", str(atc_from),
         "--json"], capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    out: dict[str, Any] = json.loads(run.stdout)
    return out


def test_bench_iso8583_link(benchmark: Any, tmp_path: Path) -> None:
    db = tmp_path / "bank.db"
    cards = profile_cards(load_profile(PROFILE), CARDS)
    issue_pans(sqlite_url(db), token_key(), PROFILE, [c.pan for c in cards])
    baseline_db = tmp_path / "baseline.db"
    shutil.copy(db, baseline_db)
    framed = _requests(REQUESTS, atc_from=0)
    load_before = os.getloadavg()[0]

    base_cpu, base_wall = _in_process(baseline_db, framed)
    host = start_host(db, tmp_path)
    try:
        cpu0 = _cpu_s(host.proc.pid)
        wall, codes = benchmark.pedantic(
            lambda: asyncio.run(_closed_loop(host.port, framed)), rounds=1, iterations=1)
        host_cpu = _cpu_s(host.proc.pid) - cpu0
        assert codes == {"00": REQUESTS}, codes
        capacity = REQUESTS / wall
        per_card = REQUESTS // CARDS
        single_ms = asyncio.run(_one_at_a_time(host.port, _requests(200, atc_from=30_000)))
        at50 = _load(host.port, 0.5 * capacity, atc_from=per_card + 10)
        at90 = _load(host.port, 0.9 * capacity, atc_from=2 * per_card + 10_000)
    finally:
        host.stop()
    figures = {
        "requests": REQUESTS, "connections": CONNECTIONS, "window": WINDOW, "cards": CARDS,
        "link_per_s": round(capacity), "link_wall_s": round(wall, 3),
        "host_cpu_s": round(host_cpu, 3), "link_per_host_cpu_s": round(REQUESTS / host_cpu),
        "in_process_per_s_cpu": round(REQUESTS / base_cpu),
        "in_process_per_s_wall": round(REQUESTS / base_wall),
        "one_at_a_time_ms_p50": round(single_ms, 2),
        "load_50": {k: at50[k] for k in ("rate_per_s", "answered", "timeouts", "latency_ms",
                                         "throughput_per_s", "codes", "send_lag_ms")},
        "load_90": {k: at90[k] for k in ("rate_per_s", "answered", "timeouts", "latency_ms",
                                         "throughput_per_s", "codes", "send_lag_ms")},
        "loadavg_1min_before": round(load_before, 2), "cpus": os.cpu_count(),
    }  # fmt: skip
    benchmark.extra_info.update(figures)
    print("\n" + json.dumps(figures, indent=1))
    for run in (at50, at90):
        assert run["timeouts"] == 0 and set(run["codes"]) == {"00"}, run
    # The budget is checked in the host's CPU time (the machine is shared: its wall clock
    # depends on who else runs); the wall-clock rate is reported beside it.
    per_cpu_s = REQUESTS / host_cpu
    if per_cpu_s < TARGET_PER_S:
        pytest.fail(f"{per_cpu_s:.0f} authorizations per host CPU second through the link, "
                    f"target {TARGET_PER_S} ({capacity:.0f}/s by the wall clock, load average "
                    f"{load_before:.1f} on {os.cpu_count()} CPUs)")
