"""Ctrl-C and SIGTERM on the long commands, as a user sends them: real `tapsim` processes.

Each must end within 2 s of the signal, with exit code 130 (SIGINT) or 143 (SIGTERM), one
line on stderr saying what was done, no traceback, no worker left running, and nothing
half-written.  SIGINT goes to the whole process group, as a terminal's Ctrl-C does (the
workers get it too); SIGTERM to the main process only, as `kill` or a service manager
sends it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backoffice.policy import BackOfficeConfig
from backoffice.reports import reconcile, store_figures
from backoffice.storage import open_store
from tests.sim_support import CALIBRATION_DIR

DEADLINE_S = 2.0  # from the signal to the process's exit: the behaviour asked for
TAPSIM = [sys.executable, "-m", "tapsim.cli"]
ROUTES = [("S01", "1"), ("S05", "2"), ("S10", "5"), ("S12", "11")]  # of the sample feed `city`


_STARTED: list[int] = []  # process groups this module started


@pytest.fixture(autouse=True)
def _no_orphans() -> Iterator[None]:
    """Whatever a failing test leaves running (its whole process group) is killed."""
    yield
    while _STARTED:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(_STARTED.pop(), signal.SIGKILL)


def start(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    proc = subprocess.Popen([*TAPSIM, *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, **(env or {})})
    _STARTED.append(proc.pid)
    return proc


def wait_started(proc: subprocess.Popen[str], then: float = 0.0) -> None:
    """Wait until `tapsim` handles SIGTERM (its main() runs: imports done), then ``then`` s.

    Read from the kernel's mask of caught signals, so a slow start on a busy machine is
    not taken for a slow stop."""
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        status = Path(f"/proc/{proc.pid}/status").read_text()
        caught = int(status.split("SigCgt:")[1].split()[0], 16)
        if caught & (1 << (signal.SIGTERM - 1)):
            break
        time.sleep(0.05)
    time.sleep(then)
    assert proc.poll() is None, proc.communicate()


def group(pgid: int) -> list[str]:
    """Live (not zombie) processes of a process group, as 'pid cmdline'."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(f"{entry.name} {cmd}")
    return out


def interrupt(proc: subprocess.Popen[str], signum: int) -> tuple[float, str, str]:
    """Send the signal (SIGINT: to the group); (seconds to exit, stdout, stderr)."""
    t0 = time.monotonic()
    if signum == signal.SIGINT:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return time.monotonic() - t0, out, err


def assert_one_line(err: str, code: int, expected: int, *words: str) -> None:
    assert code == expected, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("tapsim: interrupted"), err
    for word in words:
        assert word in lines[0], err


def no_process_left(pgid: int, within: float = 1.0) -> None:
    deadline = time.monotonic() + within  # the multiprocessing resource tracker sees EOF, goes
    while (left := group(pgid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, left


# --- tapsim sim --------------------------------------------------------------------------


def wait_for_workers(proc: subprocess.Popen[str], at_least: float) -> int:
    """Wait until the sim's worker processes run and ``at_least`` seconds have passed;
    how many workers there were."""
    t0 = time.monotonic()
    workers = 0
    while time.monotonic() - t0 < 60 and proc.poll() is None:
        workers = sum("multiprocessing" in p and "spawn_main" in p for p in group(proc.pid))
        if workers >= 2 and time.monotonic() - t0 >= at_least:
            break
        time.sleep(0.1)
    return workers


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_sim_stops_within_two_seconds(tmp_path: Path, signum: int, code: int) -> None:
    out = tmp_path / "report"
    proc = start(["sim", "--buses", "2000", "--out", str(out), "--workers", "2"], tmp_path,
                 env={"XDG_STATE_HOME": str(CALIBRATION_DIR / "xdg")})
    workers = wait_for_workers(proc, at_least=5.0)
    assert proc.poll() is None, proc.communicate()
    assert workers == 2  # interrupted while the shards run
    took, _, err = interrupt(proc, signum)
    assert took < DEADLINE_S, (took, err)
    assert_one_line(err, proc.returncode, code, "of 4 shards simulated", "nothing written")
    no_process_left(proc.pid)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary folder left either


@pytest.mark.slow
def test_sim_workers_die_with_a_killed_parent(tmp_path: Path) -> None:
    """SIGKILL leaves the parent no time to stop its workers: they must not live on."""
    proc = start(["sim", "--buses", "2000", "--out", str(tmp_path / "r"), "--workers", "2"],
                 tmp_path, env={"XDG_STATE_HOME": str(CALIBRATION_DIR / "xdg")})
    assert wait_for_workers(proc, at_least=1.0) == 2
    proc.kill()
    proc.wait(10)
    # A worker still starting (importing) when the parent died sees it before any shard.
    no_process_left(proc.pid, within=10.0)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_sim_interrupted_before_the_shards(tmp_path: Path) -> None:
    proc = start(["sim", "--buses", "2000", "--out", str(tmp_path / "r"), "--recalibrate"],
                 tmp_path)
    wait_started(proc, then=1.0)  # loading the city, calibrating the kernel
    took, _, err = interrupt(proc, signal.SIGINT)
    assert took < DEADLINE_S, (took, err)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    no_process_left(proc.pid)
    assert list(tmp_path.iterdir()) == []


# --- backoffice replay and fare price on big generated inputs ------------------------------


def write_taps(path: Path, rows: int, cards: int, step_s: int) -> Path:
    """Taps of the sample feed `city`, every ``step_s`` seconds from a Monday morning."""
    t0 = dt.datetime(2025, 3, 3, 6, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    lines = ["tap_id,card,time,stop_id,route_id,action,rider_category,fare_media"]
    for i in range(rows):
        stop, route = ROUTES[i % len(ROUTES)]
        card = "unionpay-debit" if cards == 1 else f"card{i % cards}"
        when = (t0 + dt.timedelta(seconds=step_s * i)).isoformat()
        lines.append(f"t{i},{card},{when},{stop},{route},on,,cemv")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_replay_stops_and_leaves_the_database_consistent(tmp_path: Path, signum: int,
                                                        code: int) -> None:
    taps = write_taps(tmp_path / "taps.csv", 20_000, cards=1, step_s=60)  # about 20 s of work
    db = tmp_path / "bo.db"
    proc = start(["backoffice", "replay", "--feed", "city", "--taps", str(taps),
                  "--cards", "unionpay-debit", "--db", str(db)], tmp_path)
    wait_started(proc, then=4.0)
    took, out, err = interrupt(proc, signum)
    assert took < DEADLINE_S, (took, err)
    assert_one_line(err, proc.returncode, code, "new taps (of 20,000 in", "consistent")
    assert out == ""  # no report of a run that did not finish
    committed = int(err.split("interrupted: ")[1].split(" new taps")[0].replace(",", ""))
    store = open_store(f"sqlite:///{db}")
    try:
        # Whole batches only: what the line says is what the database holds, and it adds up.
        assert 0 < committed < 20_000
        assert len(store.tap_rows()) == committed
        assert store.bad_entries() == []
        rec = reconcile(store_figures(store, BackOfficeConfig().merchant_id))
        assert rec.ok, rec.problems
    finally:
        store.close()


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_fare_price_stops_on_a_large_file(tmp_path: Path, signum: int, code: int) -> None:
    taps = write_taps(tmp_path / "taps.csv", 200_000, cards=500, step_s=7)  # about 30 s
    proc = start(["fare", "price", "--feed", "city", "--taps", str(taps), "--json"], tmp_path)
    wait_started(proc, then=3.0)
    took, out, err = interrupt(proc, signum)
    assert took < DEADLINE_S, (took, err)
    assert_one_line(err, proc.returncode, code)
    assert out == ""  # nothing printed before the pricing is done


# --- tapsim card serve: serves until stopped ------------------------------------------------


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_card_serve_stops_and_saves_the_card(tmp_path: Path, signum: int, code: int) -> None:
    with socket.socket() as s:  # a port where no vpcd listens: the card keeps reconnecting
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    state = tmp_path / "card.json"
    proc = start(["card", "serve", "sscard3", "--vpcd", f"127.0.0.1:{port}", "--state",
                  str(state)], tmp_path)
    wait_started(proc, then=0.5)
    took, _, err = interrupt(proc, signum)
    assert took < DEADLINE_S, (took, err)
    lines = err.strip().splitlines()
    assert lines[0].startswith("serving sscard3"), err  # what it printed when it started
    assert_one_line("\n".join(lines[1:]), proc.returncode, code,
                    "served 0 APDUs over 0 connection(s)", f"card state saved to {state}")
    assert json.loads(state.read_text())  # the whole state file, written atomically
    assert [p.name for p in tmp_path.iterdir()] == ["card.json"]
