"""Split the fleet by routes into shards, run them (in worker processes or here), merge.

A shard is a set of (city replica, route) units with their buses, its own riders, its own
back-office queue and its own instance of the transaction core.  Units are dealt to
``cfg.shards`` shards by expected work (largest first, to the least loaded shard), and each
shard draws from its own child of the run's seed (``SeedSequence.spawn``), so the result
depends on the seed and the shard count, never on how many workers run the shards or in
which order they finish.  Workers are ``spawn``-started processes (safe on every OS, no
inherited state); a shard needs nothing but its :class:`ShardJob`.
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import time
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from emv.card.profile import CardProfile
from sim.calibration import Calibration
from sim.city import Bus, City
from sim.config import SimConfig
from sim.coreapi import SimCore
from sim.errors import ConfigError
from sim.model import ShardSim
from sim.population import Population, population_size
from sim.results import ShardResult, merge
from sim.taps import CalibratedTaps, FullTaps, TapSource


class CoreFactory(Protocol):
    def __call__(self, city: City, cfg: SimConfig, shard: int, token_key: bytes,
                 profiles: dict[str, CardProfile]) -> SimCore: ...


def plan_shards(city: City, buses: Sequence[Bus], shards: int) -> list[list[int]]:
    """Bus indexes of each shard; a (replica, route) unit never straddles two shards."""
    if shards < 1:
        raise ConfigError(f"shards must be at least 1, got {shards}")
    units: dict[tuple[int, str], list[int]] = defaultdict(list)
    weight: dict[tuple[int, str], int] = defaultdict(int)
    for i, bus in enumerate(buses):
        block = city.blocks[bus.block]
        key = (bus.replica, block.route_id)
        units[key].append(i)
        weight[key] += sum(len(city.patterns[t.pattern].stops) for t in block.trips)
    order = sorted(units, key=lambda k: (-weight[k], k))
    load = [0] * shards
    out: list[list[int]] = [[] for _ in range(shards)]
    for key in order:
        target = min(range(shards), key=lambda s: (load[s], s))
        out[target].extend(units[key])
        load[target] += weight[key]
    return [sorted(s) for s in out if s]


def expected_boardings(city: City, buses: Sequence[Bus], cfg: SimConfig) -> float:
    """Riders expected to arrive at the shard's stops while its buses serve them."""
    table = cfg.demand.table()
    spans: dict[tuple[int, int], list[float]] = {}
    for bus in buses:
        for trip in city.blocks[bus.block].trips:
            start = trip.start + bus.offset
            if start >= cfg.horizon:
                continue
            end = start + city.patterns[trip.pattern].duration
            span = spans.setdefault((bus.replica, trip.pattern), [start, end])
            span[0] = min(span[0], start)
            span[1] = max(span[1], end)
    total = 0.0
    for (_, pattern), (first, last) in spans.items():
        stops = len(city.patterns[pattern].stops) - 1
        total += stops * table.expected(max(first, cfg.start), min(last, cfg.horizon))
    return total


@dataclass(frozen=True)
class ShardJob:
    city: City
    buses: tuple[Bus, ...]
    shard: int
    cfg: SimConfig
    calibration: Calibration
    token_key: bytes
    seed: np.random.SeedSequence
    tap_off_routes: frozenset[str]
    core_factory: CoreFactory


def _taps(job: ShardJob, rng: np.random.Generator) -> TapSource:
    cal = job.calibration
    if job.cfg.fidelity == "full":
        return FullTaps(job.token_key, cal.classes, cal.profiles, job.cfg.latency, rng,
                        job.cfg.date)
    return CalibratedTaps(cal.classes, cal.profiles, job.cfg.latency, rng, job.cfg.date)


def build_shard(job: ShardJob, progress: Callable[[float], None] | None = None,
                trace: bool = False, model: type[ShardSim] = ShardSim) -> ShardSim:
    """A shard ready to run: its riders, its core and its buses (``trace``: keep every stop;
    ``model``: another driver of the same world, such as ``sim.naive.NaiveSim``)."""
    pop_rng, tap_rng, sim_rng = (np.random.default_rng(s) for s in job.seed.spawn(3))
    cfg = job.cfg
    size = population_size(expected_boardings(job.city, job.buses, cfg), cfg.population)
    population = Population(cfg.population, size, pop_rng)
    core = job.core_factory(job.city, cfg, job.shard, job.token_key,
                            dict(job.calibration.profiles))
    return model(job.city, job.buses, job.shard, cfg, core, _taps(job, tap_rng),
                    dict(job.calibration.profiles), job.token_key, job.tap_off_routes, sim_rng,
                    population, progress, trace)


def run_shard(job: ShardJob, progress: Callable[[float], None] | None = None) -> ShardResult:
    """Everything one shard does; top-level so a spawned worker can run it."""
    t0 = time.perf_counter()
    with no_cyclic_gc():
        sim = build_shard(job, progress)
        t1 = time.perf_counter()
        result = sim.run()  # which ends its processes: nothing left holds the model in a cycle
        model = weakref.ref(sim)
        del sim  # so this frees the shard's day, by reference counting
        if model() is not None:  # something still does: free it before the next shard
            gc.collect()
    result.wall["setup"] = t1 - t0
    return result


@contextmanager
def no_cyclic_gc() -> Iterator[None]:
    """Run without Python's cyclic garbage collector.

    A shard's records (the core keeps every tap, aggregate and authorization of the day)
    are freed by reference counting; what they leave in cycles is a few thousand small
    objects a shard, which the collector takes later.  Left on, it would scan the whole
    growing heap again and again: a quarter of a shard's CPU at 130,000 taps, more on bigger
    shards (one full scan of such a heap takes about a second).  The same peak memory was
    measured either way (see sim/README.md).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


_QUEUE: Any = None


def _init_worker(queue: Any) -> None:
    global _QUEUE  # noqa: PLW0603 - one progress channel per worker process
    _QUEUE = queue


def _run_in_worker(job: ShardJob) -> ShardResult:
    queue = _QUEUE
    last = [0.0]

    def report(fraction: float) -> None:
        if queue is not None and fraction - last[0] >= 0.01:
            last[0] = fraction
            queue.put((job.shard, fraction))

    result = run_shard(job, report)
    if queue is not None:
        queue.put((job.shard, 1.0))
    return result


def run_jobs(jobs: Sequence[ShardJob], workers: int,
             progress: Callable[[dict[int, float]], None] | None = None) -> ShardResult:
    """Run the shards on ``workers`` processes (1: in this process) and merge in order."""
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    done: dict[int, float] = {j.shard: 0.0 for j in jobs}
    if workers == 1 or len(jobs) == 1:
        results = []
        for job in jobs:
            def report(fraction: float, shard: int = job.shard) -> None:
                done[shard] = fraction
                if progress is not None:
                    progress(done)

            results.append(run_shard(job, report))
        return merge(results)
    ctx = mp.get_context("spawn")
    # Progress comes back on a plain queue handed to each worker as it starts (no manager
    # process to spawn: that cost a few tenths of a second of every run).
    queue = ctx.Queue()
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx,
                             initializer=_init_worker, initargs=(queue,)) as pool:
        futures = [pool.submit(_run_in_worker, job) for job in jobs]
        while not all(f.done() for f in futures):
            _drain(queue, done, progress, timeout=0.05)
        _drain(queue, done, progress, timeout=0.0)
        results = [f.result() for f in futures]
    queue.close()
    return merge(results)


def _drain(queue: Any, done: dict[int, float],
           progress: Callable[[dict[int, float]], None] | None, timeout: float) -> None:
    import queue as queue_mod  # noqa: PLC0415

    try:
        item = queue.get(timeout=timeout) if timeout > 0 else queue.get_nowait()
    except queue_mod.Empty:
        return
    while True:
        shard, fraction = item
        done[shard] = fraction
        try:
            item = queue.get_nowait()
        except queue_mod.Empty:
            break
    if progress is not None:
        progress(done)
