"""One source of truth while the core runs (issue 15), with real processes on SQLite and
PostgreSQL.

* One in-memory holder of the bank's records per database (backoffice/writer_lock.py,
  ``IssuerLock``): `tapsim issuer run` refuses to start beside a `tapsim backoffice run` with
  its issuer in process, and such a back office (`run` or `replay`) beside `tapsim issuer
  run`, each naming the holder and what to do instead; the lock goes with a process killed
  -9, so a restart works; a back office with `--issuer iso8583://` holds no bank records and
  runs beside the host.
* A branch command kept waiting past the busy timeout by another writer is refused with the
  one busy message wherever the wait was (at open on SQLite too, where it used to print
  SQLite's raw "database is locked"), exit 2, nothing changed.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backoffice.storage import open_store
from backoffice.storage.base import ISSUER_CHANGED_KEY
from backoffice.storage.urls import is_sqlite, parse_sqlite_url
from tests.core_fixtures import BACKENDS, fresh_db_url
from tests.fixtures.backoffice import Proc
from tests.fixtures.mosquitto import Broker
from tests.iso8583_support import ROOT, issue, start_host

SAMPLES = ROOT / "backoffice" / "samples"
CLOCK_FROM = "2025-03-02T00:00:00+08:00"  # the bank's clock for the sample day
NO_BROKER = "mqtt://127.0.0.1:1"  # a back office refused at its start never reaches it
BUSY = ("is busy: another writer (a running `tapsim backoffice run`, `backoffice replay` or "
        "`tapsim issuer run` committing, or another branch operation) held it longer than "
        "the busy timeout; nothing was changed, try again")


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of each backend holding one issued, activated card (sscard3, 100.00)."""
    for db in fresh_db_url(request.param, tmp_path):
        issue(db, "sscard3", balance=10_000)
        yield db


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`tapsim ARGS` as a process of its own, to its end."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "tapsim.cli", *args], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=60, check=False)


def refusal(done: subprocess.CompletedProcess[str]) -> str:
    """The one-line refusal of a process that stopped at its start: exit 2, no traceback."""
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("tapsim: error: "), done.stderr
    return last


def replay(url: str, *extra: str) -> list[str]:
    return ["backoffice", "replay", "--feed", "city", "--taps", str(SAMPLES / "taps.csv"),
            "--cards", str(SAMPLES / "cards.toml"), "--db", url, "--json", *extra]


def back_office(mosquitto: Broker, url: str, tmp_path: Path, *extra: str) -> Proc:
    """`tapsim backoffice run` as a process, once it says ready."""
    proc = Proc(f"backoffice-{len(list(tmp_path.glob('backoffice-*.out')))}",
                ["backoffice", "run", "--broker", mosquitto.url, "--db", url, *extra],
                tmp_path, {"PYTHONPATH": str(ROOT)})
    proc.wait_for_line("ready:")
    return proc


# -- one holder of the bank's records per database -------------------------------------------


def test_a_back_office_with_its_issuer_in_process_is_refused_beside_the_issuer_host(
        url: str, tmp_path: Path) -> None:
    host = start_host(url, tmp_path)
    try:
        holder = f"held in memory by `tapsim issuer run` (pid {host.proc.pid}, "
        instead = f"reach that host instead with --issuer iso8583://127.0.0.1:{host.port}"
        for args in (["backoffice", "run", "--broker", NO_BROKER, "--db", url], replay(url)):
            message = refusal(cli(tmp_path, *args))
            assert holder in message and message.endswith(instead), (args, message)
            assert f"listening on 127.0.0.1:{host.port}" in message
        assert _taps(url) == 0  # the refused replay wrote nothing
        second = refusal(cli(tmp_path, "issuer", "run", "--listen", "127.0.0.1:0", "--db", url))
        assert holder in second and f"send to that host (127.0.0.1:{host.port})" in second
        # kill -9: the kernel (SQLite's flock) or the server (the advisory lock's session)
        # lets go with the process; the host starts again.
        host.proc.send_signal(signal.SIGKILL)
        host.proc.wait(10)
        host = start_host(url, tmp_path)
    finally:
        host.stop()


@pytest.mark.service
def test_the_issuer_host_is_refused_beside_a_back_office_with_its_issuer_in_process(
        url: str, tmp_path: Path, mosquitto: Broker) -> None:
    bo = back_office(mosquitto, url, tmp_path)
    try:
        message = refusal(cli(tmp_path, "issuer", "run", "--listen", "127.0.0.1:0", "--db", url))
        assert f"held in memory by `tapsim backoffice run` (pid {bo.proc.pid}, " in message
        assert message.endswith("stop it first, then start this host and run the back office "
                                "with --issuer iso8583://HOST:PORT (this host's address)")
        # A replay is refused by the back office's own writer lock first.
        assert "another back office is writing" in refusal(cli(tmp_path, *replay(url)))
        assert bo.alive()
        bo.kill()  # kill -9: both locks go with it
        host = start_host(url, tmp_path)
        host.stop()
        bo = back_office(mosquitto, url, tmp_path)  # and the back office starts again
        assert bo.stop() == 0, bo.stderr()
    finally:
        bo.stop()


@pytest.mark.service
def test_a_back_office_over_the_wire_runs_beside_the_issuer_host(
        url: str, tmp_path: Path, mosquitto: Broker) -> None:
    host = start_host(url, tmp_path, "--clock-from", CLOCK_FROM)
    try:
        wire = f"iso8583://127.0.0.1:{host.port}"
        done = cli(tmp_path, *replay(url, "--issuer", wire))
        assert done.returncode == 0, done.stderr
        report: dict[str, Any] = json.loads(done.stdout)
        assert report["acquirer"]["link"]["answered"] > 0
        assert report["reconciliation"]["ok"]
        bo = back_office(mosquitto, url, tmp_path, "--issuer", wire)
        assert bo.stop() == 0, bo.stderr()
        assert host.proc.poll() is None
    finally:
        assert host.stop() == 143, host.stderr()


def _taps(url: str) -> int:
    store = open_store(url, read_only=True)
    try:
        return store.count("taps")
    finally:
        store.close()


# -- a branch command kept waiting: one message, nothing changed -----------------------------


def _bank_state(url: str) -> tuple[Any, ...]:
    """The card's account, the change mark and the journal, as the database holds them."""
    store = open_store(url, read_only=True)
    try:
        issuer = store.load_issuer()
        return (sorted((a.account_id, a.balance, a.held, a.status.value) for a in issuer.accounts),
                sorted((c.pan_token, c.state.value) for c in issuer.cards),
                store.meta(ISSUER_CHANGED_KEY), store.count("iss_journal"))
    finally:
        store.close()


BRANCH = {
    "deposit": ["account", "deposit", "--card", "sscard3", "--amount", "100"],
    "issue": ["card", "issue", "--profile", "unionpay-debit", "--balance", "100"],
}


@pytest.mark.parametrize("command", sorted(BRANCH))
def test_a_branch_command_kept_waiting_is_refused_with_the_busy_message(
        url: str, tmp_path: Path, command: str) -> None:
    """SQLite: another connection holds a write transaction (BEGIN IMMEDIATE), so the branch
    waits at open (its schema check's write transaction); PostgreSQL: another session holds
    the issuer lock (the mark's row FOR UPDATE), so it waits taking that lock."""
    before = _bank_state(url)
    if is_sqlite(url):
        holder: Any = sqlite3.connect(parse_sqlite_url(url).path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
    else:
        holder = open_store(url)
        holder.hold_issuer()
    try:
        done = cli(tmp_path, *BRANCH[command], "--db", url)
    finally:
        if is_sqlite(url):
            holder.execute("ROLLBACK")
            holder.close()
        else:
            holder.release_issuer()
            holder.close()
    message = refusal(done)
    assert message.endswith(BUSY), message
    assert "database is locked" not in done.stderr and "lock timeout" not in done.stderr
    assert _bank_state(url) == before
    assert cli(tmp_path, *BRANCH[command], "--db", url).returncode == 0  # free: it goes through
    assert _bank_state(url) != before

