"""The textbook alternative, for comparison only: a SimPy process for every passenger.

Each rider is a process: it arrives at its stop (a source process per stop draws arrivals
one by one, thinning a Poisson process at the peak rate down to the time-of-day demand),
waits for a bus of its pattern, queues for one of the bus's validators, taps, rides, and
queues for a door to get off.  Each bus is a process that signals its riders and waits for
them.  The taps themselves go through exactly the same code as the fleet model's
(``ShardSim._tap``: the calibrated kernel, the deny list, the real core), so a benchmark
that runs both measures what the modelling style costs, nothing else.  No links and no
queue in front of the core: the naive model gets the cheaper job.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np
import simpy

from sim.coreapi import SimTap
from sim.model import ShardSim
from sim.results import ShardResult


class _Bus:
    __slots__ = ("alight", "doors", "index", "load", "outbox", "route", "stop_id", "tap_off",
                 "validators")

    def __init__(self, env: simpy.Environment, index: int, validators: int, doors: int) -> None:
        self.index = index
        self.validators = simpy.Resource(env, capacity=validators)
        self.doors = simpy.Resource(env, capacity=doors)
        self.alight: dict[int, list[simpy.Event]] = {}
        self.load = 0
        self.outbox: list[SimTap] = []
        self.route = ""
        self.stop_id = ""
        self.tap_off = False


class NaiveSim(ShardSim):
    """Same city, riders, validators and core as :class:`ShardSim`; one process per rider."""

    def run(self) -> ShardResult:
        env, cfg = self.env, self.cfg
        self._waiting: dict[tuple[int, int, int], list[simpy.Event]] = {}
        self._peak = cfg.demand.peak_rate / 3600.0
        hours = np.arange(0.0, 30.0, 0.05)
        self._shape_max = float(cfg.demand.shape(hours).max())
        for b, bus in enumerate(self.buses):
            env.process(self._naive_bus(b, bus))
        env.run(until=cfg.horizon)
        self._clear()
        self._settle()
        self._finish()
        return self.res

    def _source(self, key: tuple[int, int, int], weight: float) -> Generator[Any, Any, None]:
        """Riders arriving at one stop, one process each (thinning at the peak rate)."""
        env, u, shape = self.env, self.u, self.cfg.demand.shape
        rate = self._peak * weight
        if rate <= 0:
            return
        while True:
            yield env.timeout(u.exponential(1.0 / rate))
            accept = float(shape(np.array([env.now / 3600.0]))[0]) / self._shape_max
            if u.u() < accept:
                env.process(self._rider(key))

    def _rider(self, key: tuple[int, int, int]) -> Generator[Any, Any, None]:
        env, dcfg = self.env, self.cfg.dwell
        board = env.event()
        self._waiting[key].append(board)
        bus, dest, on_done = yield board
        with bus.validators.request() as req:
            yield req
            if self.u.u() < self.cfg.population.cash:
                c, secs = -1, dcfg.handle_cash
                self.res.counts["cash"] += 1
            else:
                c = int(self.u.u() * self.pop.n)
                secs = self._tap(bus.index, c, env.now, self.when(env.now), bus.stop_id,
                                 bus.route, "tap_on" if bus.tap_off else "tap", bus.outbox,
                                 False)
                if secs < 0:
                    secs, c = -secs + dcfg.decline_retry + dcfg.handle_cash, -1
            yield env.timeout(dcfg.t_walk + secs)
        on_done.succeed()
        alight = env.event()
        bus.alight.setdefault(dest, []).append(alight)
        off_done = yield alight
        with bus.doors.request() as req:
            yield req
            secs = dcfg.t_alight
            if bus.tap_off and c >= 0:
                secs += abs(self._tap(bus.index, c, env.now, self.when(env.now), bus.stop_id,
                                      bus.route, "tap_off", bus.outbox, True))
            yield env.timeout(secs)
        off_done.succeed()

    def _naive_bus(self, b: int, bus: Any) -> Generator[Any, Any, None]:
        env, cfg, city, u = self.env, self.cfg, self.city, self.u
        dcfg = cfg.dwell
        state = _Bus(env, b, dcfg.validators, dcfg.alight_channels)
        ride_p = self.table.ride_p
        for trip in city.blocks[bus.block].trips:
            start = trip.start + bus.offset
            if start >= cfg.horizon:
                return
            if env.now < start:
                yield env.timeout(start - env.now)
            pat = city.patterns[trip.pattern]
            n = len(pat.stops)
            weights = self._stop_weights(bus.replica, trip.pattern, n)
            for i in range(n - 1):
                key = (bus.replica, trip.pattern, i)
                if key not in self._waiting:
                    self._waiting[key] = []
                    env.process(self._source(key, weights[i]))
            state.alight = {}
            state.route = pat.route_id
            state.tap_off = pat.route_id in self.tap_off_routes
            for i in range(n):
                if env.now >= cfg.horizon:
                    return
                state.stop_id = pat.stops[i]
                waits: list[simpy.Event] = []
                for alight in state.alight.pop(i, []):
                    done = env.event()
                    alight.succeed(done)
                    waits.append(done)
                state.load -= len(waits)
                self.res.counts["alightings"] += len(waits)
                if i < n - 1:
                    waiting = self._waiting[(bus.replica, trip.pattern, i)]
                    take = min(len(waiting), cfg.capacity - state.load)
                    for board in waiting[:take]:
                        done = env.event()
                        board.succeed((state, min(i + u.geometric(ride_p), n - 1), done))
                        waits.append(done)
                    del waiting[:take]
                    state.load += take
                    self.res.counts["boardings"] += take
                if waits:
                    yield env.all_of(waits)
                    yield env.timeout(dcfg.door_time)
                if state.outbox:
                    taps, state.outbox = state.outbox, []
                    self._deliver(taps, env.now)
                if i < n - 1:
                    yield env.timeout(pat.run_times[i])
