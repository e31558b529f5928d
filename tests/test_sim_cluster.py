"""Shards that are pure, and `tapsim sim --cluster` on a real Dask cluster.

A shard's result is a function of its job alone: run twice in one process, or in two fresh
processes, it is the same.  On a Dask scheduler with two workers (real processes on
127.0.0.1) the report is the local run's with the same seed, also when a worker is killed
while it runs a shard (the scheduler gives the shard to the other); Ctrl-C cancels the
shards on the cluster and exits 130; a bad or unreachable address is one line, no traceback.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sim.cluster import check_address
from sim.errors import ConfigError
from sim.report import deterministic
from sim.results import ShardResult
from sim.runner import run_shard
from sim.simulate import local_workers, prepare
from tapsim.cli import main as tapsim_main
from tests.fixtures.dask_cluster import DaskCluster, env
from tests.fixtures.services import free_port
from tests.sim_support import CALIBRATION_DIR, SMALL_CITY, small_config

TAPSIM = [sys.executable, "-m", "tapsim.cli"]
# Long enough shards (about a CPU-second each) that a worker can be killed in the middle of one.
RUN = ["sim", "--city", "lanshan", "--peak-rate", "24", "--shards", "4", "--seed", "5",
       "--json"]


def comparable(result: ShardResult) -> dict[str, Any]:
    """Every field of a shard's result but its times (wall clock, CPU), arrays as lists."""
    return {f.name: plain(getattr(result, f.name)) for f in dataclasses.fields(result)
            if f.name not in ("wall", "cpu")}


def plain(value: Any) -> Any:
    """``value`` with its numpy arrays (also inside dicts) as lists, for ``==``."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


# --- pure shards ------------------------------------------------------------------------------


def test_a_shard_run_twice_in_one_process_gives_one_result() -> None:
    p = prepare(SMALL_CITY, small_config(shards=2), calibration_dir=CALIBRATION_DIR)
    first, second = run_shard(p.jobs[1]), run_shard(p.jobs[1])
    assert first.taps > 0
    assert comparable(first) == comparable(second)


def test_a_shard_run_in_two_processes_gives_one_result(tmp_path: Path) -> None:
    p = prepare(SMALL_CITY, small_config(shards=2), calibration_dir=CALIBRATION_DIR)
    job = tmp_path / "job.pickle"
    job.write_bytes(pickle.dumps(p.jobs[0]))
    here = run_shard(p.jobs[0])
    script = ("import pickle, sys\nfrom sim.runner import run_shard\n"
              "job = pickle.load(open(sys.argv[1], 'rb'))\n"
              "pickle.dump(run_shard(job), open(sys.argv[2], 'wb'))\n")
    results = []
    for k in range(2):
        out = tmp_path / f"result-{k}.pickle"
        subprocess.run([sys.executable, "-c", script, str(job), str(out)], check=True,
                       env=_env(), timeout=120)
        results.append(pickle.loads(out.read_bytes()))
    assert comparable(results[0]) == comparable(results[1]) == comparable(here)


# --- the local worker count -------------------------------------------------------------------


def test_a_small_run_stays_in_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sim.simulate.usable_cpus", lambda: 8)
    p = prepare(SMALL_CITY, small_config(shards=4), calibration_dir=CALIBRATION_DIR)
    assert local_workers(p.jobs, None) == 1  # a few hundred riders: no worker pays its start
    assert len(p.jobs) == 3  # one a route
    assert local_workers(p.jobs, 2) == 2  # asked for: as asked, at most one a shard
    assert local_workers(p.jobs, 9) == 3


def test_a_big_run_gets_every_cpu_at_most_one_a_shard(monkeypatch: pytest.MonkeyPatch) -> None:
    p = prepare("lanshan", small_config(shards=6, hours=18.0, start_hour=5.0, buses=2000),
                calibration_dir=CALIBRATION_DIR)
    monkeypatch.setattr("sim.simulate.usable_cpus", lambda: 4)
    assert local_workers(p.jobs, None) == 4
    monkeypatch.setattr("sim.simulate.usable_cpus", lambda: 16)
    assert local_workers(p.jobs, None) == 6


# --- addresses --------------------------------------------------------------------------------


@pytest.mark.parametrize(("address", "says"), [
    ("localhost:8786", "give tcp://HOST:PORT"),
    ("http://10.0.0.5:8786", "give tcp://HOST:PORT"),
    ("tcp://10.0.0.5", "no port"),
    ("tcp://10.0.0.5:99999", "not a scheduler address"),
    ("tcp://10.0.0.5:8786/x", "no path"),
])
def test_a_bad_address_is_refused_saying_why(address: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        check_address(address)


def test_an_unreachable_scheduler_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str],
                                              tmp_path: Path) -> None:
    monkeypatch.setattr("sim.cluster.CONNECT_TIMEOUT_S", 1.0)
    address = f"tcp://127.0.0.1:{free_port()}"  # nobody listens there
    t0 = time.monotonic()
    code = tapsim_main(["sim", "--cluster", address, "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"tapsim: error: --cluster {address}: no Dask scheduler answered "
                          "within 1 s"), err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert time.monotonic() - t0 < 10  # the timeout, not the calibration, decided it


def test_workers_and_cluster_together_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code = tapsim_main(["sim", "--cluster", "tcp://127.0.0.1:8786", "--workers", "2"])
    assert code == 2
    assert "give one or the other" in capsys.readouterr().err


# --- a real cluster ---------------------------------------------------------------------------


def _env() -> dict[str, str]:
    """This checkout first on the path (``tests.fixtures.dask_cluster.env``), and the tests'
    calibration store."""
    return env(XDG_STATE_HOME=str(CALIBRATION_DIR / "xdg"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    pytest.importorskip("distributed")
    c = DaskCluster(tmp_path_factory.mktemp("dask"))
    try:
        c.add_worker()
        c.add_worker()
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def watcher(cluster: DaskCluster) -> Iterator[Any]:
    """The test's own client of the scheduler: who processes what."""
    from distributed import Client

    client = Client(cluster.address, timeout=30,  # type: ignore[no-untyped-call]
                    set_as_default=False)
    try:
        client.wait_for_workers(2, timeout=60)
        yield client
    finally:
        client.close()  # type: ignore[no-untyped-call]


_LOCAL: dict[str, dict[str, Any]] = {}


def local_report(tmp_path: Path) -> dict[str, Any]:
    """The same run in local processes (once for the module)."""
    if "report" not in _LOCAL:
        out = subprocess.run([*TAPSIM, *RUN, "--workers", "2", "--out", str(tmp_path / "local")],
                             check=False, capture_output=True, text=True, env=_env(),
                             timeout=300)
        assert out.returncode == 0, out.stderr
        _LOCAL["report"] = json.loads(out.stdout)
    return _LOCAL["report"]


def start_on_cluster(cluster: DaskCluster, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([*TAPSIM, *RUN, "--cluster", cluster.address, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(), start_new_session=True)


def shards_running(watcher: Any) -> dict[str, list[str]]:
    """Each worker's shard tasks being processed now."""
    return {w: [k for k in keys if str(k).startswith("tapsim-shard-")]
            for w, keys in watcher.processing().items()}


def wait_running(watcher: Any, proc: subprocess.Popen[str]) -> str:
    """The address of a worker that is running a shard, as soon as one is."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        busy = [w for w, keys in shards_running(watcher).items() if keys]
        if busy:
            return busy[0]
        time.sleep(0.02)
    raise AssertionError(f"no shard ran on the cluster: {proc.communicate()}")


@pytest.mark.service
@pytest.mark.slow
def test_the_cluster_gives_the_local_report(cluster: DaskCluster, watcher: Any,
                                            tmp_path: Path) -> None:
    proc = start_on_cluster(cluster, tmp_path / "cluster")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    report = json.loads(out)
    assert report["wall"]["workers"] == 2  # the cluster's two worker threads ran it
    assert report["taps"]["total"] > 10_000
    assert deterministic(report) == deterministic(local_report(tmp_path))


@pytest.mark.service
@pytest.mark.slow
def test_ctrl_c_cancels_the_shards_on_the_cluster(cluster: DaskCluster, watcher: Any,
                                                  tmp_path: Path) -> None:
    proc = start_on_cluster(cluster, tmp_path / "cluster")
    wait_running(watcher, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert re.fullmatch(r"tapsim: interrupted: [0-3] of 4 shards simulated, nothing written",
                        lines[0]), err
    assert not (tmp_path / "cluster").exists()
    # The running shards stop at their next progress step (1 % of their day).
    deadline = time.monotonic() + 5
    while any(shards_running(watcher).values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(shards_running(watcher).values())


@pytest.mark.service
def test_workers_with_other_code_are_refused(cluster: DaskCluster, watcher: Any,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str],
                                            tmp_path: Path) -> None:
    monkeypatch.setattr("sim.cluster.code_id", lambda: "a newer driver")
    code = tapsim_main([*RUN, "--cluster", cluster.address, "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"tapsim: error: --cluster {cluster.address}: 2 of 2 worker(s) run "
                          "other tapsim code than this driver"), err
    assert "Traceback" not in err


@pytest.mark.service
@pytest.mark.slow
def test_a_worker_killed_mid_run_changes_nothing(cluster: DaskCluster, watcher: Any,
                                                 tmp_path: Path) -> None:
    proc = start_on_cluster(cluster, tmp_path / "cluster")
    victim = ""
    try:
        victim = wait_running(watcher, proc)
        time.sleep(0.2)  # past a queued task's start: the shard runs
        cluster.workers[victim].kill()  # SIGKILL, in the middle of a shard
        out, err = proc.communicate(timeout=300)
    finally:
        cluster.workers.pop(victim, None)
        cluster.add_worker()  # two again, for whatever runs next
    assert proc.returncode == 0, err
    assert deterministic(json.loads(out)) == deterministic(local_report(tmp_path))
