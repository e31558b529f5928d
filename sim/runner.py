"""Split the fleet by routes into shards, run them (in worker processes or here), merge.

A shard is a set of (city replica, route) units with their buses, its own riders, its own
back-office queue and its own instance of the transaction core.  Units are dealt to
``cfg.shards`` shards by expected work (largest first, to the least loaded shard), and each
shard draws from its own child of the run's seed (``SeedSequence.spawn``), so the result
depends on the seed and the shard count, never on how many workers run the shards or in
which order they finish.  Workers are ``spawn``-started processes (safe on every OS, no
inherited state); a shard needs nothing but its :class:`ShardJob`.  Ctrl-C or SIGTERM stops
them at once (``_stop``): nothing of an unfinished run is kept.
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import sys
import time
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from emv.card.profile import CardProfile
from sim.calibration import Calibration
from sim.city import Bus, City
from sim.config import SimConfig
from sim.coreapi import SimCore
from sim.errors import ConfigError, SimError
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


def children(seed: np.random.SeedSequence, n: int) -> list[np.random.SeedSequence]:
    """The first ``n`` children of ``seed``, the same on every call.

    ``SeedSequence.spawn`` would give these on its first call only: it advances the parent's
    count of children, so a job run twice (a retry, a cluster resubmitting a lost worker's
    shard, a benchmark's rounds) drew a different day.  Built from the parent's entropy and
    spawn key instead, as ``spawn`` builds them, a child is a function of its parent alone.
    """
    return [np.random.SeedSequence(seed.entropy, spawn_key=(*seed.spawn_key, i),
                                   pool_size=seed.pool_size) for i in range(n)]


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
    pop_rng, tap_rng, sim_rng = (np.random.default_rng(s) for s in children(job.seed, 3))
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
    t0, c0 = time.perf_counter(), time.thread_time()
    with no_cyclic_gc():
        sim = build_shard(job, progress)
        t1, c1 = time.perf_counter(), time.thread_time()
        result = sim.run()  # which ends its processes: nothing left holds the model in a cycle
        model = weakref.ref(sim)
        del sim  # so this frees the shard's day, by reference counting
        if model() is not None:  # something still does: free it before the next shard
            gc.collect()
    result.wall["setup"] = t1 - t0
    result.cpu["setup"] = c1 - c0
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


# --- worker processes -----------------------------------------------------------------------
#
# A small pool of our own rather than concurrent.futures: on Ctrl-C or SIGTERM the parent must
# stop the workers at once (the executor can only cancel shards not yet started, and waits
# for the running ones: a minute and more on a big city), and workers must not print
# tracebacks.  Workers ignore SIGINT (a terminal sends it to the whole process group: the
# parent decides) and are terminated by the parent; they take jobs from one queue and send
# progress, results and errors back on another.

STOP_GRACE_S = 1.0  # after SIGTERM, how long a worker may take to go before it is killed
_PROGRESS_STEP = 0.01  # a worker reports its shard's progress in steps of this fraction


def _worker(jobs: Any, out: Any, parent: int) -> None:
    """A worker process's loop: run shards until the ``None`` sentinel (or the parent's end)."""
    import queue as queue_mod  # noqa: PLC0415
    import signal  # noqa: PLC0415

    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    while os.getppid() == parent:  # else the parent is gone (killed): nobody wants the rest
        try:
            job = jobs.get(timeout=1.0)
        except queue_mod.Empty:
            continue
        if job is None:
            return
        try:
            result = run_shard(job, _reporter(out, job.shard))
        except Exception as exc:  # handed to the parent, which raises it
            out.put(("error", job.shard, _portable(exc)))
            return
        out.put(("progress", job.shard, 1.0))
        out.put(("done", job.shard, result))


def _reporter(out: Any, shard: int) -> Callable[[float], None]:
    """A shard's progress, sent to the parent in steps of ``_PROGRESS_STEP``."""
    last = 0.0

    def report(fraction: float) -> None:
        nonlocal last
        if fraction - last >= _PROGRESS_STEP:
            last = fraction
            out.put(("progress", shard, fraction))

    return report


def _die_with_parent() -> None:
    """Linux: have the kernel kill this worker when the parent dies, even by SIGKILL (which
    leaves it no time to stop its workers); elsewhere the queue poll above notices."""
    if sys.platform.startswith("linux"):
        import ctypes  # noqa: PLC0415
        import signal  # noqa: PLC0415

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL))


def _portable(exc: Exception) -> Exception:
    """The exception itself when it pickles (a SimError keeps its message for the user),
    else a RuntimeError with the worker's traceback."""
    import pickle  # noqa: PLC0415
    import traceback  # noqa: PLC0415

    try:
        pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own bytes, a moment ago
    except Exception:  # whatever fails to pickle or to come back
        return RuntimeError("a simulation worker failed:\n" + "".join(
            traceback.format_exception(exc)))
    return exc


def run_jobs(jobs: Sequence[ShardJob], workers: int,
             progress: Callable[[dict[int, float]], None] | None = None) -> ShardResult:
    """Run the shards on ``workers`` processes (1: in this process) and merge in order.

    ``progress`` gets each shard's fraction done (1.0 once its result is in).  On any
    exception here, KeyboardInterrupt included, the workers are stopped before it goes on.
    """
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    done: dict[int, float] = {j.shard: 0.0 for j in jobs}
    if progress is not None:
        progress(done)  # the shard count, before the first one reports
    if workers == 1 or len(jobs) == 1:
        results = []
        for job in jobs:
            def report(fraction: float, shard: int = job.shard) -> None:
                done[shard] = fraction
                if progress is not None:
                    progress(done)

            results.append(run_shard(job, report))
            report(1.0)
        return merge(results)
    return merge(_run_in_workers(jobs, min(workers, len(jobs)), done, progress))


def _run_in_workers(jobs: Sequence[ShardJob], workers: int, done: dict[int, float],
                    progress: Callable[[dict[int, float]], None] | None) -> list[ShardResult]:
    import queue as queue_mod  # noqa: PLC0415
    import signal  # noqa: PLC0415

    ctx = mp.get_context("spawn")
    jobs_q, out_q = ctx.Queue(), ctx.Queue()
    # Shards not yet taken may sit in the queue's pipe when we stop: never wait to flush it.
    jobs_q.cancel_join_thread()
    procs = [ctx.Process(target=_worker, args=(jobs_q, out_q, os.getpid()), daemon=True,
                         name=f"tapsim-sim-worker-{i}") for i in range(workers)]
    results: dict[int, ShardResult] = {}
    try:
        # Started with SIGINT and SIGTERM blocked, which they inherit: a Ctrl-C while a
        # worker imports its modules must not print its traceback (the worker then ignores
        # SIGINT and unblocks both).  The parent gets a signal of that moment when it
        # unblocks, with every worker started and known to ``_stop``.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            for p in procs:
                p.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        for job in jobs:
            jobs_q.put(job)
        for _ in procs:
            jobs_q.put(None)
        while len(results) < len(jobs):
            try:
                kind, shard, payload = out_q.get(timeout=0.1)
            except queue_mod.Empty:
                _check_alive(procs, results, jobs)
                continue
            if kind == "progress":
                done[shard] = payload
                if progress is not None:
                    progress(done)
            elif kind == "done":
                results[shard] = payload
            else:
                raise payload
        for p in procs:
            p.join()
    finally:
        _stop(procs)
        out_q.cancel_join_thread()
        jobs_q.close()
        out_q.close()
    return [results[j.shard] for j in jobs]


def _check_alive(procs: Sequence[Any], results: dict[int, ShardResult],
                 jobs: Sequence[ShardJob]) -> None:
    """A worker that died without a word (killed, out of memory) fails the run."""
    for p in procs:
        if p.exitcode not in (None, 0):
            raise SimError(f"a simulation worker died (exit code {p.exitcode}; out of "
                           f"memory?) with {len(jobs) - len(results)} of {len(jobs)} "
                           "shards unfinished")


def _stop(procs: Sequence[Any]) -> None:
    """Terminate the workers still running, then kill those that do not go within
    ``STOP_GRACE_S``; with SIGINT and SIGTERM held off meanwhile, so a second Ctrl-C
    cannot leave a worker behind (it is acted on once they are gone)."""
    import signal  # noqa: PLC0415

    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        live = [p for p in procs if p.is_alive()]
        for p in live:
            p.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for p in live:
            p.join(max(deadline - time.monotonic(), 0.0))
        for p in live:
            if p.is_alive():
                p.kill()
                p.join()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
