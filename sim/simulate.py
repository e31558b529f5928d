"""One simulation run from a city and a configuration to a report: the whole pipeline.

city -> fleet -> calibration (real kernel, cached) -> shards (by route) -> workers -> merge
-> report.  The CLI (``tapsim sim``), the tests and the benchmark all come through here.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from sim.calibration import Calibration, calibrate
from sim.city import Bus, City, fleet, load_city
from sim.config import MAX_SHARDS, SimConfig
from sim.report import RunInfo, build
from sim.results import ShardResult
from sim.runner import CoreFactory, ShardJob, children, expected_boardings, plan_shards, run_jobs

MIN_AUTO_SHARDS = 4
RIDERS_PER_SHARD = 200_000
"""Automatic sharding: about this many expected riders a shard.  A shard's core keeps every
tap of its day (about 2.4 KB each), so 200,000 riders (about 250,000 taps) keep a worker near
half a gigabyte, and a 10 M-tap day makes about 40 shards: enough to keep two cores busy to
the end, few enough that each shard's fixed costs stay small."""


def auto_shards(city: City, buses: Sequence[Bus], cfg: SimConfig) -> int:
    """The shard count ``cfg.shards=None`` stands for: one per ``RIDERS_PER_SHARD``
    expected riders, at least 4 and at most 99.  A function of the city and the
    configuration only (never of the machine), so a seed still gives one result."""
    wanted = math.ceil(expected_boardings(city, buses, cfg) / RIDERS_PER_SHARD)
    return max(MIN_AUTO_SHARDS, min(MAX_SHARDS, wanted))

WORKER_START_S = 2.0
"""What a local worker process costs before its first shard (spawn, imports), in seconds on
this machine; measured, see sim/README.md."""
RIDERS_PER_CPU_S = 8_000.0
"""Expected riders a core simulates in a second (taps through the real core); measured."""


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity where the OS says, else all)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def local_workers(jobs: Sequence[ShardJob], asked: int | None) -> int:
    """The local worker count: ``asked`` (at most one a shard), or for ``None`` the count
    predicted fastest, so that the default is never slower than fewer workers would be.

    A worker process costs ``WORKER_START_S`` before it simulates anything, and the run
    lasts until its slowest worker ends (shards are taken in order from one queue); with one
    worker the shards run in this process, at no start cost.  So a small run (the Lanshan
    hour, 24 buses) stays in one process, and a day with shards enough for every CPU gets
    them all.
    """
    if asked is not None:
        return min(asked, len(jobs)) if asked >= 1 else asked
    most = min(usable_cpus(), len(jobs))
    if most <= 1:
        return 1
    seconds = [expected_boardings(j.city, j.buses, j.cfg) / RIDERS_PER_CPU_S for j in jobs]
    best, best_s = 1, sum(seconds)
    for n in range(2, most + 1):
        predicted = WORKER_START_S + _makespan(seconds, n)
        if predicted < best_s:
            best, best_s = n, predicted
    return best


def _makespan(seconds: Sequence[float], workers: int) -> float:
    """When the last of ``workers`` ends, each taking the next shard when it is free."""
    free = [0.0] * workers
    for s in seconds:
        i = free.index(min(free))
        free[i] += s
    return max(free)


# TEST token key, the same as the demo validator's; a deployment sets TAPSIM_TOKEN_KEY.
DEMO_TOKEN_KEY = b"tapsim-demo-token-key (TEST ONLY)"


@dataclass
class SimRun:
    report: dict[str, Any]
    result: ShardResult
    calibration: Calibration
    city: City


@dataclass
class Prepared:
    """Everything a run needs before its shards start."""

    city: City
    buses: tuple[Bus, ...]
    calibration: Calibration
    jobs: list[ShardJob]
    tap_off_routes: frozenset[str]
    factory: CoreFactory
    pricing: dict[str, object]  # how rides are priced (``sim.core.pricing``), for the report


def prepare(city_spec: str, cfg: SimConfig, *, token_key: bytes = DEMO_TOKEN_KEY,
            recalibrate: bool = False, calibration_dir: Path | None = None,
            core_factory: CoreFactory | None = None) -> Prepared:
    """Load the city, calibrate the kernel, and cut the fleet into shard jobs."""
    from sim import core as real_core  # noqa: PLC0415 - the core pulls in fare/backoffice

    city = load_city(city_spec, day=cfg.date)
    buses = fleet(city, cfg.buses)
    feed = real_core.fare_feed(city)  # parsed once for the two questions below
    pricing = real_core.pricing(city, cfg, feed)  # before the calibration: costs nothing
    factory: CoreFactory = core_factory or real_core.make_core
    tap_off = real_core.tap_off_routes(city, feed)
    cal = calibrate(cfg.date, cfg.calibration_samples, cfg.kernel_amount, token_key,
                    recalibrate=recalibrate, directory=calibration_dir)
    shards = cfg.shards if cfg.shards is not None else auto_shards(city, buses, cfg)
    cfg = replace(cfg, shards=shards)  # the jobs carry the count they were cut into
    plan = plan_shards(city, buses, shards)
    seeds = children(np.random.SeedSequence(cfg.seed), shards)
    jobs = [ShardJob(city=city, buses=tuple(buses[i] for i in idx), shard=s, cfg=cfg,
                     calibration=cal, token_key=token_key, seed=seeds[s],
                     tap_off_routes=tap_off, core_factory=factory)
            for s, idx in enumerate(plan)]
    return Prepared(city, buses, cal, jobs, tap_off, factory, pricing)


def simulate(city_spec: str, cfg: SimConfig, *, workers: int | None = 1,
             token_key: bytes = DEMO_TOKEN_KEY, recalibrate: bool = False,
             calibration_dir: Path | None = None,
             progress: Callable[[dict[int, float]], None] | None = None,
             core_factory: CoreFactory | None = None, cluster: str | None = None,
             notice: Callable[[str], None] | None = None) -> SimRun:
    """Run the fleet of ``city_spec`` under ``cfg``; the report and the merged figures.

    ``cluster``: a Dask scheduler's address (``sim.cluster``) to run the shards on instead of
    ``workers`` local processes; the report is the same either way (``wall`` aside)."""
    from sim import core as real_core  # noqa: PLC0415

    t0, c0 = time.perf_counter(), time.process_time()
    client = None
    if cluster is not None:
        from sim.cluster import connect  # noqa: PLC0415

        client = connect(cluster)  # before the city and the calibration: fails fast
    try:
        p = prepare(city_spec, cfg, token_key=token_key, recalibrate=recalibrate,
                    calibration_dir=calibration_dir, core_factory=core_factory)
        prepared = (time.perf_counter() - t0, time.process_time() - c0)
        if cluster is not None:
            from sim.cluster import run_on_cluster  # noqa: PLC0415

            result, used = run_on_cluster(p.jobs, cluster, progress, notice, client)
        else:
            used = local_workers(p.jobs, workers)
            result = run_jobs(p.jobs, used, progress)
    finally:
        if client is not None:
            client.close(timeout=2)
    wall = time.perf_counter() - t0
    city, buses = p.city, p.buses
    info = RunInfo(
        city=city.name, city_source=city.source, routes=len(city.routes), stops=len(city.stops),
        patterns=len(city.patterns), blocks=len(city.blocks), buses=len(buses),
        replicas=max(b.replica for b in buses) + 1, shards=len(p.jobs), workers=used,
        tap_off_routes=tuple(sorted(p.tap_off_routes)),
        wired=real_core.wired(p.factory, flat_fare=p.pricing["source"] == "flat fare"),
        pricing=p.pricing,
    )
    return SimRun(build(result, cfg, p.calibration, info, wall, prepare=prepared), result,
                  p.calibration, city)
