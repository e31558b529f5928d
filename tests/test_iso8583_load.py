"""`tapsim load iso8583` against `tapsim issuer run`, both real processes on 127.0.0.1."""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from isolink.load import percentiles, schedule
from tests.iso8583_support import ROOT, issue, running_host


def load(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "tapsim.cli", "load", "iso8583", "--target", f"127.0.0.1:{port}",
         *args], capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip


def test_load_run_reports_codes_latencies_and_seconds(tmp_path: Path) -> None:
    db = tmp_path / "bank.db"
    cards = ["--card", "sscard3", "--card", "unionpay-debit", "--cards", "2"]
    listed = load(0, *cards, "--list-pans")
    assert listed.returncode == 0, listed.stderr
    pairs = [line.split() for line in listed.stdout.splitlines()]
    assert [p for p, _ in pairs] == ["sscard3", "sscard3", "unionpay-debit", "unionpay-debit"]
    assert len({pan for _, pan in pairs}) == 4
    for profile, pan in pairs:  # the sscard3 cards active, the unionpay-debit ones not
        issue(db, profile, pan=pan, activate=profile == "sscard3")
    with running_host(db, tmp_path) as host:
        run = load(host.port, "--rate", "40", "--duration", "3", *cards, "--json")
        assert run.returncode == 0, run.stderr
        report = json.loads(run.stdout)
        # The human table, from a second run with later ATCs (the first run's are spent).
        table = load(host.port, "--rate", "20", "--duration", "1", "--atc-from", "1000")
    assert "is required" not in table.stderr
    assert report["scheduled"] == report["sent"] == report["answered"] > 0
    assert report["timeouts"] == 0
    # Round-robin over two active cards and two never activated: half and half.
    codes = report["codes"]
    assert set(codes) == {"00", "78"}
    assert abs(codes["00"] - codes["78"]) <= 1
    assert [b["second"] for b in report["per_second"]] == [0, 1, 2]
    assert sum(b["answered"] for b in report["per_second"]) == report["answered"]
    lat = report["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert "load: 1/3 s" in run.stderr  # the progress line
    assert table.returncode == 0, table.stderr
    assert "00" in table.stdout and "approved" in table.stdout


def test_load_against_nothing_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = load(port, "--rate", "10", "--duration", "1")
    assert run.returncode == 2
    assert f"cannot connect to 127.0.0.1:{port}" in run.stderr
    assert "Traceback" not in run.stderr


def test_schedules_are_open_loop_and_seeded() -> None:
    fixed = schedule(100, 2, "fixed", random.Random(1))
    assert len(fixed) == 200 and fixed[1] - fixed[0] == pytest.approx(0.01)
    poisson = schedule(1000, 10, "poisson", random.Random(7))
    assert poisson == schedule(1000, 10, "poisson", random.Random(7))
    assert 9_500 < len(poisson) < 10_500  # mean 10,000, sd 100
    gaps = sorted(b - a for a, b in itertools.pairwise(poisson))
    # Exponential gaps with mean 1 ms: the median is ln 2 ms.
    assert gaps[len(gaps) // 2] == pytest.approx(0.000693, rel=0.1)


def test_percentiles_are_nearest_rank() -> None:
    values = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    assert percentiles(values) == {"p50": 50.0, "p95": 95.0, "p99": 99.0, "max": 100.0}
    assert percentiles([]) == {"p50": None, "p95": None, "p99": None, "max": None}
