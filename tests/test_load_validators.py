"""`tapsim load validators`: N validators (real journals and uplinks) through a real Mosquitto
with credentials and ACLs to a real `tapsim backoffice run` on SQLite.

A short run commits every tap it scheduled, exactly the taps the ledger holds, with sane
latency figures and the backlog back to zero; without a back office the run stops with the
error that says so; a broker that is not there or refuses the validators, and bad options,
are clear errors; Ctrl-C gives the report of what ran and exit 130.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from isolink import load as isoload
from tapsim.cli import main
from terminal import fleet_load
from tests.fixtures.mosquitto import Broker, BrokerFactory
from tests.fixtures.services import free_port
from tests.test_e2e_faults import Fleet, taps_in

ROOT = Path(__file__).resolve().parents[1]
IDS = [f"load-{i:04d}" for i in range(1, 5)]


def load(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "tapsim.cli", "load", "validators", *args],
                          capture_output=True, text=True, env=env, timeout=timeout, check=False)


def credentials(b: Broker, tmp_path: Path) -> Path:
    """The credentials/ folder as `tapsim broker config` writes it (one file per user)."""
    assert b.auth is not None
    folder = tmp_path / "credentials"
    folder.mkdir()
    for user, password in b.auth.credentials.items():
        (folder / user).write_text(password + "\n")
    return folder


def issue_cards(url: str, n: int, capsys: pytest.CaptureFixture[str]) -> None:
    listed = load("--cards", str(n), "--list-pans")
    assert listed.returncode == 0, listed.stderr
    pans = [line.split()[1] for line in listed.stdout.splitlines()]
    assert len(set(pans)) == n
    for pan in pans:
        assert main(["card", "issue", "--profile", "unionpay-debit", "--pan", pan, "--activate",
                     "--balance", "100000000", "--db", url]) == 0
    capsys.readouterr()


@pytest.fixture
def bo_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    from backoffice.storage import sqlite_url

    url = sqlite_url(tmp_path / "bo.db")
    issue_cards(url, 4, capsys)
    return url


@pytest.mark.service
@pytest.mark.slow
def test_a_short_run_commits_every_tap_and_reports_sane_figures(
        broker_factory: BrokerFactory, tmp_path: Path, bo_url: str) -> None:
    b = broker_factory(validators=IDS)
    creds = credentials(b, tmp_path)
    fleet = Fleet(tmp_path, b, bo_url)
    try:
        bo = fleet.backoffice()
        common = ["--broker", b.url, "--credentials", str(creds), "--validators", "4",
                  "--cards", "4"]
        run = load(*common, "--rate", "50", "--duration", "2", "--json")
        # A second run, the table: later ATCs (the first run's are spent at the back office).
        table = load(*common, "--rate", "20", "--duration", "1", "--atc-from", "1000")
        assert bo.stop() == 0, bo.stderr()
    finally:
        fleet.close()
    assert run.returncode == 0, run.stderr
    r = json.loads(run.stdout)
    assert r["validators"] == 4 and r["cards"] == 4 and r["interrupted"] is False
    assert r["scheduled"] == r["due"] == r["journaled"] == r["committed"] > 50
    assert r["uncommitted"] == 0 and r["journal_errors"] == [] and r["uplink"]["errors"] == []
    lat = r["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert 0 <= r["journal_lag_ms"]["p50"] <= lat["p50"]
    rows = r["per_second"]
    assert [x["second"] for x in rows][:2] == [0, 1]
    assert sum(x["scheduled"] for x in rows) == r["scheduled"]
    assert sum(x["committed"] for x in rows) == r["committed"]
    assert rows[-1]["backlog"] == 0 and r["backlog_max"] >= 0
    for x in rows:
        if x["p50"] is not None:
            assert 0 < x["p50"] <= x["p99"] <= x["max"]
    assert "load: 1/2 s" in run.stderr  # the progress line
    # Every tap it counted is in the ledger (both runs), charged once, none dead-lettered.
    ledger = taps_in(bo_url)
    assert {t.split(":")[0] for t in ledger} == set(IDS)
    summary = json.loads(bo.lines()[-1])
    assert summary["dead_letters"] == {}, summary
    assert table.returncode == 0, table.stderr
    assert "tap to commit ms from due time" in table.stdout and "uncommitted 0" in table.stdout
    committed_2 = int(table.stdout.split("committed ")[1].split(",")[0])
    assert len(ledger) == r["committed"] + committed_2


@pytest.mark.service
@pytest.mark.slow
def test_without_a_back_office_the_run_says_so(broker_factory: BrokerFactory,
                                               tmp_path: Path) -> None:
    b = broker_factory(validators=IDS)
    creds = credentials(b, tmp_path)
    t0 = time.monotonic()
    run = load("--broker", b.url, "--credentials", str(creds), "--validators", "4", "--rate",
               "20", "--duration", "10", "--ack-timeout", "2")
    assert run.returncode == 2, run.stderr
    assert "no commit ack in 2 s — is `tapsim backoffice run` running on this broker" \
        in run.stderr
    assert "Traceback" not in run.stderr
    assert time.monotonic() - t0 < 10  # stopped at the ack timeout, not after the schedule


@pytest.mark.service
def test_a_broker_that_refuses_the_validators_or_is_not_there(
        broker_factory: BrokerFactory, tmp_path: Path) -> None:
    b = broker_factory(validators=IDS)
    anonymous = load("--broker", b.url, "--validators", "2", "--rate", "5", "--duration", "1")
    assert anonymous.returncode == 2
    assert f"the broker at {b.url} refused validator load-0001" in anonymous.stderr
    assert anonymous.stderr.count("\n") == 1  # one line, not one per uplink and retry
    port = free_port()
    nothing = load("--broker", f"mqtt://127.0.0.1:{port}", "--validators", "2", "--rate", "5",
                   "--duration", "1")
    assert nothing.returncode == 2
    assert f"cannot reach the broker at mqtt://127.0.0.1:{port}" in nothing.stderr


@pytest.mark.service
@pytest.mark.slow
def test_ctrl_c_prints_the_report_of_what_ran_and_exits_130(
        broker_factory: BrokerFactory, tmp_path: Path, bo_url: str) -> None:
    b = broker_factory(validators=IDS)
    creds = credentials(b, tmp_path)
    fleet = Fleet(tmp_path, b, bo_url)
    try:
        bo = fleet.backoffice()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        p = subprocess.Popen(
            [sys.executable, "-m", "tapsim.cli", "load", "validators", "--broker", b.url,
             "--credentials", str(creds), "--validators", "4", "--cards", "4", "--rate", "40",
             "--duration", "60", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.monotonic() + 60
        while len(taps_in(bo_url)) < 40 and time.monotonic() < deadline:
            time.sleep(0.2)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
        assert bo.stop() == 0, bo.stderr()
    finally:
        fleet.close()
    assert p.returncode == 130, err
    r = json.loads(out)
    assert r["interrupted"] is True
    assert 40 <= r["due"] < r["scheduled"]
    assert r["committed"] <= r["due"]
    assert len(r["per_second"]) < 60
    assert "tapsim: interrupted:" in err and "Traceback" not in err


@pytest.mark.parametrize(("args", "message"), [
    (["--broker", "http://h", "--validators", "2", "--rate", "1", "--duration", "1"],
     "--broker: broker URL: scheme must be mqtt:// or mqtts://"),
    (["--broker", "mqtt://u@h", "--validators", "2", "--rate", "1", "--duration", "1"],
     "--broker names a user"),
    (["--validators", "2", "--rate", "1", "--duration", "1"], "--broker is required"),
    (["--broker", "mqtt://h", "--validators", "2", "--duration", "1"], "--rate is required"),
    (["--broker", "mqtt://h", "--validators", "0", "--rate", "1", "--duration", "1"],
     "--validators: 0 is out of range"),
    (["--broker", "mqtt://h", "--validators", "2", "--rate", "-1", "--duration", "1"],
     "--rate: -1 is out of range"),
    (["--broker", "mqtt://h", "--validators", "2", "--rate", "1", "--duration", "1",
      "--id-prefix", "a b"], "--id-prefix: validator id prefix 'a b'"),
    (["--broker", "mqtt://h", "--validators", "2", "--rate", "1", "--duration", "1",
      "--card", "nope"], "--card: nope: no such built-in card"),
    (["--broker", "mqtt://h", "--validators", "2", "--rate", "1", "--duration", "1",
      "--credentials", "/nonexistent"], "--credentials /nonexistent: not a folder"),
])
def test_bad_options_are_clear_errors(args: list[str], message: str) -> None:
    run = load(*args, timeout=60)
    assert run.returncode == 2, run.stderr
    assert message in run.stderr
    assert "Traceback" not in run.stderr


def test_a_validator_without_a_password_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "load-0001").write_text("pw\n")
    run = load("--broker", "mqtt://h", "--credentials", str(tmp_path), "--validators", "2",
               "--rate", "1", "--duration", "1", timeout=60)
    assert run.returncode == 2
    assert f"--credentials {tmp_path}: no password file for validator load-0002" in run.stderr


def test_schedule_and_percentiles_are_the_iso8583_generators() -> None:
    """Speed twins: the same arrivals and the same nearest-rank figures as isolink.load."""
    for arrivals in fleet_load.ARRIVALS:
        assert fleet_load.schedule(300, 2.5, arrivals, random.Random(7)) == \
            isoload.schedule(300, 2.5, arrivals, random.Random(7))
    rng = random.Random(3)
    for n in (0, 1, 2, 99, 100, 1001):
        values = [rng.expovariate(20) for _ in range(n)]
        assert fleet_load.percentiles(values) == isoload.percentiles(values)
