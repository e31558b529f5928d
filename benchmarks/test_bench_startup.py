"""Start-up time of the `tapsim` command (issue 11, item 6), beside bare Python.

Targets, in CPU time of the child process (median of the rounds): ``tapsim --version`` and
``tapsim tlv`` under 150 ms, ``tapsim tap --card sscard3 --fresh`` under 300 ms,
``tapsim fare price`` of a 10-tap file under 200 ms.

Each case runs the venv's own ``tapsim`` script (the one beside ``sys.executable``) as a
child process, as a user runs it, and is timed by the CPU time the child used
(``getrusage(RUSAGE_CHILDREN)`` before and after: the benchmark's timer), since on a shared
machine the wall clock also counts the time other processes hold the cores; the median wall
clock is reported beside it (``wall_ms``), and so is the ratio of each case to ``python -c
pass`` measured in the same run (``x_bare_python``).  One untimed run first; the children
may write bytecode caches (PYTHONDONTWRITEBYTECODE is dropped), as an installed package has.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fare.samples import sample_taps_path

BIN = Path(sys.executable).parent
ROUNDS = int(os.environ.get("TAPSIM_BENCH_STARTUP_ROUNDS", "10"))
TARGET_MS = {"version": 150.0, "tlv": 150.0, "tap": 300.0, "fare_price": 200.0}


def _children_cpu() -> float:
    """CPU seconds (user + system) of every finished child: the benchmark's timer."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _commands(taps10: Path) -> dict[str, list[str]]:
    tapsim = str(BIN / "tapsim")
    return {
        "bare_python": [sys.executable, "-c", "pass"],
        "version": [tapsim, "--version"],
        "tlv": [tapsim, "tlv", "9F3602 0001"],
        "tap": [tapsim, "tap", "--card", "sscard3", "--fresh"],
        "fare_price": [tapsim, "fare", "price", "--feed", "city", "--taps", str(taps10)],
    }


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("startup")
    lines = sample_taps_path("city").read_text().splitlines()
    (path / "taps10.csv").write_text("\n".join(lines[:11]) + "\n")  # header + 10 taps
    return path


def _env(workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["XDG_STATE_HOME"] = str(workdir / "state")
    env["COLUMNS"] = "100"
    return env


def _run(argv: list[str], env: dict[str, str], cwd: Path, walls: list[float]) -> None:
    t0 = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, check=False)
    walls.append(time.perf_counter() - t0)
    # tap exits 1 for a decline: the card here is fresh, so it approves (0)
    assert done.returncode == 0, done.stderr.decode(errors="replace")


def _measure(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(median CPU s, median wall s) of ROUNDS runs, after one untimed run."""
    _run(argv, env, cwd, [])
    cpus: list[float] = []
    walls: list[float] = []
    for _ in range(ROUNDS):
        c0 = _children_cpu()
        _run(argv, env, cwd, walls)
        cpus.append(_children_cpu() - c0)
    return statistics.median(cpus), statistics.median(walls)


_baseline: dict[str, float] = {}


def _bare_python_cpu(workdir: Path) -> float:
    """``python -c pass`` in this run: measured once, by whichever case needs it first."""
    if "cpu" not in _baseline:
        _baseline["cpu"], _baseline["wall"] = _measure(_commands(workdir)["bare_python"],
                                                       _env(workdir), workdir)
    return _baseline["cpu"]


@pytest.mark.benchmark(timer=_children_cpu)
@pytest.mark.parametrize("case", ["bare_python", "version", "tlv", "tap", "fare_price"])
def test_startup(benchmark: Any, workdir: Path, case: str) -> None:
    argv = _commands(workdir / "taps10.csv")[case]
    env = _env(workdir)
    base = _bare_python_cpu(workdir)
    _run(argv, env, workdir, [])  # untimed: bytecode caches, page cache
    walls: list[float] = []
    benchmark.pedantic(_run, args=(argv, env, workdir, walls), rounds=ROUNDS, iterations=1)
    cpu_ms = benchmark.stats.stats.median * 1e3
    wall_ms = statistics.median(walls) * 1e3
    ratio = cpu_ms / (base * 1e3)
    benchmark.extra_info.update({"cpu_ms": round(cpu_ms, 1), "wall_ms": round(wall_ms, 1),
                                 "bare_python_cpu_ms": round(base * 1e3, 1),
                                 "x_bare_python": round(ratio, 2)})
    print(f"\n{' '.join(Path(a).name if i == 0 else a for i, a in enumerate(argv))}: "
          f"{cpu_ms:.0f} ms CPU ({wall_ms:.0f} ms wall), {ratio:.1f}x `python -c pass` "
          f"({base * 1e3:.0f} ms CPU)")
    target = TARGET_MS.get(case)
    if target is not None:
        assert cpu_ms < target, (f"{case}: {cpu_ms:.0f} ms CPU, target {target:.0f} ms "
                                 f"({wall_ms:.0f} ms wall; python -c pass {base * 1e3:.0f} ms)")
