"""The back office as a queue: ``c`` servers (FCFS) and a service-time law.

Uplink messages (a bus's taps from one stop, or a journal flushed after an outage) wait for
a free server, are served for a time drawn from the configured law, and are then handed to
the real transaction core at the simulated moment service ends.  :func:`erlang_c` and
:func:`mmc_mean_wait` give the M/M/c results the queue is validated against
(tests/test_sim_queueing.py): Poisson arrivals and exponential service reproduce the
formula's mean wait.
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import simpy

from sim.draws import BlockDraws
from sim.errors import ConfigError

Law = Literal["exp", "det", "lognormal"]


def erlang_c(servers: int, offered: float) -> float:
    """Probability that an arrival waits (Erlang C) for ``offered`` = lambda/mu Erlangs."""
    if servers < 1:
        raise ConfigError(f"servers must be at least 1, got {servers}")
    if offered < 0:
        raise ConfigError(f"offered load must not be negative, got {offered}")
    if offered >= servers:
        return 1.0
    # Erlang B by the stable recursion, then C from B.
    b = 1.0
    for k in range(1, servers + 1):
        b = offered * b / (k + offered * b)
    rho = offered / servers
    return b / (1.0 - rho + rho * b)


def mmc_mean_wait(arrival_rate: float, mean_service: float, servers: int) -> float:
    """Mean time in queue (before service) of an M/M/c queue; inf when unstable."""
    if arrival_rate <= 0:
        return 0.0
    mu = 1.0 / mean_service
    if arrival_rate >= servers * mu:
        return math.inf
    return erlang_c(servers, arrival_rate / mu) / (servers * mu - arrival_rate)


@dataclass(frozen=True, slots=True)
class ServiceLaw:
    """Service time of one message: ``per_message`` (random by ``law``) + ``per_tap`` x taps."""

    law: Law = "exp"
    per_message: float = 0.004  # s, mean
    per_tap: float = 0.0005  # s, deterministic part per tap in the message
    cv: float = 0.5  # coefficient of variation for ``lognormal``

    def __post_init__(self) -> None:
        if self.law not in ("exp", "det", "lognormal"):
            raise ConfigError(f"backoffice.law must be exp, det or lognormal, not {self.law!r}")
        if self.per_message < 0 or self.per_tap < 0 or self.cv < 0:
            raise ConfigError("backoffice service times and cv must not be negative")

    def sampler(self, rng: np.random.Generator) -> Callable[[int], float]:
        """A draw of the service time for a message of ``n`` taps (batched draws inside)."""
        mean, per_tap = self.per_message, self.per_tap
        if self.law == "det" or mean == 0:
            return lambda n: mean + per_tap * n
        if self.law == "exp":
            block = BlockDraws(lambda k: rng.exponential(mean, size=k))
        else:
            sigma2 = math.log1p(self.cv * self.cv)
            mu = math.log(mean) - sigma2 / 2
            block = BlockDraws(lambda k: rng.lognormal(mu, math.sqrt(sigma2), size=k))
        nxt = block.next
        return lambda n: nxt() + per_tap * n


class BackOfficeQueue:
    """``servers`` servers in front of the transaction core, FCFS, in simulated time.

    Messages are served first come, first served by the first server to become free, so
    when a message arrives its whole future is known: it starts at once or when the
    earliest-free server frees up (Kiefer-Wolfowitz: a heap of the servers' free times),
    and ends a drawn service time later.  That is what a SimPy ``Resource`` gives, at two
    events per message (arrival, and end: when the core ingests it) instead of four
    (arrival, request, service, release); with a message per bus stop the difference is a
    tenth of a shard's time.  Service times are drawn in the same order and, when a server
    is free, at the same moment as with the ``Resource``, so runs reproduce theirs.
    ``tests/test_sim_queueing.py`` checks the M/M/c law.
    """

    def __init__(self, env: simpy.Environment, servers: int, law: ServiceLaw,
                 rng: np.random.Generator) -> None:
        if servers < 1:
            raise ConfigError(f"backoffice.servers must be at least 1, got {servers}")
        self.env = env
        self.servers = servers
        self._service = law.sampler(rng)
        self._free = [-math.inf] * servers  # a heap: when each server is next free
        self._waiting: deque[float] = deque()  # start times of messages not yet started
        self.waits = array("d")
        self.busy = 0.0
        self.served = 0
        self.in_queue_max = 0

    def submit(self, taps: int, done: Callable[[float], None], delay: float = 0.0) -> None:
        """Queue a message of ``taps`` taps arriving after ``delay`` (the link's latency);
        ``done(now)`` runs when its service ends."""
        if delay > 0:
            self.env.timeout(delay).callbacks.append(lambda _: self._arrive(taps, done))
        else:
            self._arrive(taps, done)

    def _arrive(self, taps: int, done: Callable[[float], None]) -> None:
        env = self.env
        now = env.now
        free = heapq.heappop(self._free)
        start = free if free > now else now
        service = self._service(taps)
        heapq.heappush(self._free, start + service)
        self.waits.append(start - now)
        self.busy += service
        waiting = self._waiting  # the queue as this message finds it (itself included)
        while waiting and waiting[0] <= now:
            waiting.popleft()
        if start > now:
            waiting.append(start)
            self.in_queue_max = max(self.in_queue_max, len(waiting))

        def finish(_: object) -> None:
            self.served += 1
            done(env.now)

        env.timeout(start - now + service).callbacks.append(finish)

    def utilisation(self, horizon: float) -> float:
        return self.busy / (self.servers * horizon) if horizon > 0 else 0.0

    def mean_wait(self) -> float:
        return float(np.mean(np.frombuffer(self.waits, dtype=float))) if self.waits else 0.0


@dataclass(frozen=True, slots=True)
class QueueCheck:
    """A simulated M/M/c queue next to the formula."""

    simulated_wait: float
    formula_wait: float
    utilisation: float
    jobs: int

    @property
    def relative_error(self) -> float:
        return abs(self.simulated_wait - self.formula_wait) / self.formula_wait


def simulate_mmc(arrival_rate: float, mean_service: float, servers: int, jobs: int,
                 seed: int, warmup: int = 1000) -> QueueCheck:
    """Poisson arrivals into :class:`BackOfficeQueue` with exponential service."""
    rng = np.random.default_rng(seed)
    env = simpy.Environment()
    queue = BackOfficeQueue(env, servers, ServiceLaw("exp", mean_service, 0.0), rng)
    gaps = rng.exponential(1.0 / arrival_rate, size=jobs + warmup).tolist()

    def nothing(_: float) -> None:
        return None

    def source() -> Generator[Any, Any, None]:
        for gap in gaps:
            yield env.timeout(gap)
            queue.submit(1, nothing)

    env.process(source())
    env.run()
    waits = np.frombuffer(queue.waits, dtype=float)[warmup:]
    return QueueCheck(simulated_wait=float(waits.mean()),
                      formula_wait=mmc_mean_wait(arrival_rate, mean_service, servers),
                      utilisation=queue.utilisation(env.now), jobs=len(waits))
