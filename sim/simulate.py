"""One simulation run from a city and a configuration to a report: the whole pipeline.

city -> fleet -> calibration (real kernel, cached) -> shards (by route) -> workers -> merge
-> report.  The CLI (``tapsim sim``), the tests and the benchmark all come through here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sim.calibration import Calibration, calibrate
from sim.city import City, fleet, load_city
from sim.config import SimConfig
from sim.report import RunInfo, build
from sim.results import ShardResult
from sim.runner import CoreFactory, ShardJob, plan_shards, run_jobs

# TEST token key, the same as the demo validator's; a deployment sets TAPSIM_TOKEN_KEY.
DEMO_TOKEN_KEY = b"tapsim-demo-token-key (TEST ONLY)"


@dataclass
class SimRun:
    report: dict[str, Any]
    result: ShardResult
    calibration: Calibration
    city: City


def simulate(city_spec: str, cfg: SimConfig, *, workers: int = 1,
             token_key: bytes = DEMO_TOKEN_KEY, recalibrate: bool = False,
             calibration_dir: Path | None = None,
             progress: Callable[[dict[int, float]], None] | None = None,
             core_factory: CoreFactory | None = None) -> SimRun:
    """Run the fleet of ``city_spec`` under ``cfg``; the report and the merged figures."""
    from sim import core as real_core  # noqa: PLC0415 - the core pulls in fare/backoffice

    t0 = time.perf_counter()
    city = load_city(city_spec, day=cfg.date)
    buses = fleet(city, cfg.buses)
    factory: CoreFactory = core_factory or real_core.make_core
    tap_off = real_core.tap_off_routes(city)
    cal = calibrate(cfg.date, cfg.calibration_samples, cfg.kernel_amount, token_key,
                    recalibrate=recalibrate, directory=calibration_dir)
    plan = plan_shards(city, buses, cfg.shards)
    seeds = np.random.SeedSequence(cfg.seed).spawn(cfg.shards)
    jobs = [ShardJob(city=city, buses=tuple(buses[i] for i in idx), shard=s, cfg=cfg,
                     calibration=cal, token_key=token_key, seed=seeds[s],
                     tap_off_routes=tap_off, core_factory=factory)
            for s, idx in enumerate(plan)]
    result = run_jobs(jobs, workers, progress)
    wall = time.perf_counter() - t0
    info = RunInfo(
        city=city.name, city_source=city.source, routes=len(city.routes), stops=len(city.stops),
        patterns=len(city.patterns), blocks=len(city.blocks), buses=len(buses),
        replicas=max(b.replica for b in buses) + 1, shards=len(plan), workers=workers,
        tap_off_routes=tuple(sorted(tap_off)), wired=real_core.wired(factory),
    )
    return SimRun(build(result, cfg, cal, info, wall), result, cal, city)
