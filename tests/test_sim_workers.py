"""The simulation's worker processes: a shard's error reaches the user as it was raised, and a
worker that dies (killed, out of memory) fails the run at once instead of hanging it."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest

from sim.core import make_core
from sim.errors import CityError, SimError
from sim.runner import run_jobs
from sim.simulate import prepare
from tests.sim_support import CALIBRATION_DIR, SMALL_CITY, small_config


def refusing_core(city: Any, cfg: Any, shard: int, *args: Any) -> Any:
    """Shard 1's core refuses its city (top level: a spawned worker imports it)."""
    if shard == 1:
        raise CityError("test-city", "refused by shard 1")
    return make_core(city, cfg, shard, *args)


def dying_core(city: Any, cfg: Any, shard: int, *args: Any) -> Any:
    """Shard 1's worker is killed, as the kernel's OOM killer would."""
    if shard == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return make_core(city, cfg, shard, *args)


def test_a_shard_error_reaches_the_caller_as_raised() -> None:
    p = prepare(SMALL_CITY, small_config(shards=3), calibration_dir=CALIBRATION_DIR,
                core_factory=refusing_core)
    with pytest.raises(CityError, match="test-city: refused by shard 1"):
        run_jobs(p.jobs, workers=2)


def test_a_dead_worker_fails_the_run() -> None:
    p = prepare(SMALL_CITY, small_config(shards=3), calibration_dir=CALIBRATION_DIR,
                core_factory=dying_core)
    with pytest.raises(SimError, match=r"a simulation worker died \(exit code -9"):
        run_jobs(p.jobs, workers=2)


def test_progress_ends_with_every_shard_done() -> None:
    p = prepare(SMALL_CITY, small_config(shards=3, hours=1.0), calibration_dir=CALIBRATION_DIR)
    seen: list[dict[int, float]] = []
    run_jobs(p.jobs, workers=2, progress=lambda done: seen.append(dict(done)))
    assert seen[0] == {0: 0.0, 1: 0.0, 2: 0.0}  # the shard count, before any work
    assert seen[-1] == {0: 1.0, 1: 1.0, 2: 1.0}
