"""The fleet model of one shard: a SimPy process per bus (and per cellular link), none per rider.

A bus runs its block's trips in order.  At each stop it lets off the riders bound there
(tapping off on routes whose fare needs it), takes on everyone who arrived since the last
bus of the same pattern (one Poisson draw, up to its free capacity; riders' cards and
destinations drawn from bulk numpy uniforms), has each card rider tap (``sim.taps``: the
real kernel, or its calibrated latency and outcome), applies the validator's rules (the
kernel's verdict, the deny list as this bus knows it), and stays for the TCQSM dwell.  The
stop's accepted taps go up the bus's link as one message into the back-office queue, or
into the validator's journal while the link is down.  When a message's service ends, the
real transaction core ingests it; the deny-list changes it makes are published to the
fleet.

E-purse records (the fare was paid on the chip) follow the bus's link: sent at once while it
is up, journaled while it is down and sent when it comes back.  The day's clearing is cut at
the end of the service period (``clearing``): what reached the back office by then is
cleared (full fidelity: by the real clearing core, every TAC verified with the issuers'
keys) or refused; what is still journaled is pending (it clears in the next day's batch).
"""

from __future__ import annotations

import datetime as dt
import time
from array import array
from collections.abc import Callable, Generator, Sequence
from time import perf_counter
from typing import Any, NamedTuple

import numpy as np
import simpy

from emv.card.profile import CardProfile
from emv.kernel import TapResult
from emv.pan import mask_pan, pan_token
from sim.city import Bus, City
from sim.config import SimConfig
from sim.connectivity import DenyView, Links
from sim.coreapi import CoreReply, SimCard, SimCore, SimTap
from sim.dwell import dwell
from sim.latency import card_pan
from sim.population import (
    CATEGORIES,
    CEMV,
    EXPIRED,
    HOME_ISSUER,
    INSUFFICIENT,
    ISSUER_GROUPS,
    KINDS,
    OTHER_ISSUER,
    STATES,
    Population,
)
from sim.queueing import BackOfficeQueue
from sim.randoms import Uniforms
from sim.results import (
    DECLINED,
    DWELL_BIN,
    DWELL_BINS,
    EPURSE,
    LATENCY_BIN,
    LATENCY_BINS,
    PAYMENT_PATHS,
    QUICKPASS_OFFLINE,
    QUICKPASS_ONLINE,
    WAIT_BIN,
    WAIT_BINS,
    ShardResult,
    histogram,
)
from sim.taps import TapSource
from terminal.decisions import TapPolicy, Verdict, decide
from wire.messages import TapOutcome

Progress = Callable[[float], None]

MEDIA = ("cemv", "tunion")
_ACCEPTED = TapOutcome.ACCEPTED  # read once (an enum member costs a look-up each time)
_timedelta = dt.timedelta
DRAIN = 6 * 3600.0  # after the horizon: time allowed for journals and queue to empty
TOPUP_AMOUNT = 10_000  # fen a holder short of funds pays in


class StopVisit(NamedTuple):
    bus: int
    trip: str
    stop: int  # index in the trip's pattern
    arrival: float
    alighting: int
    boarding: int
    paying_on: float  # seconds the boarders' payments added
    paying_off: float  # seconds tapping off added
    dwell: float
    run: float  # to the next stop


class TapTrace(NamedTuple):
    """One tap as it happened (kept with ``trace``, for checks of the report's figures)."""

    bus: int
    time: float  # simulated seconds
    card: int
    path: int  # sim.results.PAYMENT_PATHS index
    latency: float  # s
    epurse_fare: int  # fen paid from the purse at the gate (0 unless the purse paid)
    epurse_refund: int  # fen owed back to the purse (a negative fare at the gate)
    refusal: str | None  # the gate's reason, when the validator refused the tap
    purse_issuer: str = ""  # an e-purse purchase: the card's T-Union issuer (city)
    journaled: bool = False  # an e-purse purchase made while the bus's link was down


class PurseRecord(NamedTuple):
    """An e-purse purchase on its way to clearing (``result``: the kernel's, full fidelity)."""

    tap_id: str
    time: float
    group: int  # sim.population.ISSUER_GROUPS index
    fare: int  # fen debited from the purse
    result: TapResult


class ShardSim:
    """One shard: its buses, riders, links, back-office queue and transaction core."""

    def __init__(self, city: City, buses: Sequence[Bus], shard: int, cfg: SimConfig,
                 core: SimCore, taps: TapSource, profiles: dict[str, CardProfile],
                 token_key: bytes, tap_off_routes: frozenset[str],
                 rng: np.random.Generator, population: Population,
                 progress: Progress | None = None, trace: bool = False) -> None:
        self.city = city
        self.buses = list(buses)
        self.shard = shard
        self.cfg = cfg
        self.core = core
        self.taps = taps
        self.profiles = profiles
        self.token_key = token_key
        self.tap_off_routes = tap_off_routes
        self.rng = rng
        self.u = Uniforms(rng)
        self.pop = population
        self.progress = progress
        self.env = simpy.Environment(initial_time=cfg.start)
        self.t0 = dt.datetime.combine(cfg.date, dt.time(0), tzinfo=city.timezone)
        self.links = Links(cfg.link, len(self.buses), (cfg.start, cfg.horizon))
        self.deny = DenyView(self.links)
        self.queue = BackOfficeQueue(self.env, cfg.backoffice.servers, cfg.backoffice.service,
                                     rng)
        self.table = cfg.demand.table()
        self.res = ShardResult(shard=shard, buses=len(self.buses), servers=cfg.backoffice.servers)
        self.res.routes = sorted({city.blocks[b.block].route_id for b in self.buses})
        # Hot columns as lists: indexing a list is several times faster than a numpy array.
        self._kind = population.kind.tolist()
        self._path = population.path.tolist()
        self._state = population.state.tolist()
        self._cat = population.category.tolist()
        self._atc = population.atc.tolist()
        self._balance = population.balance.tolist()
        self._other = population.other.tolist()
        # E-purse records: sent to the back office, and journaled per bus (link down).
        self.purse_sent: list[PurseRecord] = []
        self.purse_journals: list[list[PurseRecord]] = [[] for _ in self.buses]
        self.cards: dict[int, SimCard] = {}
        self.by_token: dict[str, int] = {}
        self._last: dict[tuple[int, int, int], float] = {}
        self._left: dict[tuple[int, int, int], int] = {}
        self._weights: dict[tuple[int, int], list[float]] = {}
        self.journals: list[list[SimTap]] = [[] for _ in self.buses]
        self.journal_taps = 0
        self.queued_taps = 0
        self._latencies: array[float] = array("d")
        self._paths: array[int] = array("b")  # each tap's payment path, beside its latency
        self._dwells: array[float] = array("d")
        self._seq = [0] * len(self.buses)
        self.t_core = 0.0  # wall-clock s inside the real core (issuer, back office, fares)
        self.t_card = 0.0  # ... inside the card taps (kernel samples or runs, card crypto)
        self._vid = [f"V{shard:02d}-{i:05d}" for i in range(len(self.buses))]
        # With ``trace``: every stop a bus served, for checks (bus, stop index, arrival, riders
        # off, riders on, seconds paying on, seconds paying off, dwell).
        self.stops: list[StopVisit] | None = [] if trace else None
        self.tap_log: list[TapTrace] | None = [] if trace else None  # every tap, with ``trace``
        self.policy = TapPolicy()
        self._started: list[Generator[Any, Any, None]] = []  # the processes run() started
        self._verdicts: dict[tuple[int, bool], tuple[TapResult, Verdict]] = {}

    # --- time ---------------------------------------------------------------------------

    def when(self, t: float) -> dt.datetime:
        return self.t0 + _timedelta(0, t)  # (days, seconds): quicker than by keyword

    # --- cards --------------------------------------------------------------------------

    def card(self, c: int, now: float) -> SimCard:
        card = self.cards.get(c)
        if card is not None:
            return card
        kind = KINDS[self._kind[c]]
        profile = self.profiles[kind]
        pan = card_pan(profile.pan, self.shard, c)
        state = self._state[c]
        expiry = profile.expiry
        if state == EXPIRED:
            expiry = self.cfg.date - dt.timedelta(days=1 + self.u.below(300))
        card = SimCard(index=c, pan=pan, psn=profile.psn, token=pan_token(pan, self.token_key),
                       masked=mask_pan(pan), scheme=profile.crypto.cryptogram, kind=kind,
                       state=STATES[state], category=CATEGORIES[self._cat[c]], expiry=expiry,
                       issuer_master_key=profile.crypto.issuer_master_key,
                       purse_issuer=OTHER_ISSUER if self._other[c] else HOME_ISSUER)
        self.cards[c] = card
        self.by_token[card.token] = c
        t0 = perf_counter()
        key = self.core.issue(card, self.when(now))
        self.t_core += perf_counter() - t0
        self.taps.personalised(c, key)
        return card

    # --- processes ----------------------------------------------------------------------

    def run(self) -> ShardResult:
        t_start, c_start = time.perf_counter(), time.thread_time()
        env, cfg = self.env, self.cfg
        started = self._started
        for b, bus in enumerate(self.buses):
            started.append(self._bus(b, bus))
            if cfg.link.law != "none":
                started.append(self._link(b))
        started.append(self._sampler())
        for process in started:
            env.process(process)
        env.run(until=cfg.horizon)
        self._clear()  # the day's clearing, cut at the end of the service period
        t_day, c_day = time.perf_counter(), time.thread_time()
        # Whatever is still journaled or queued arrives once links are back (buses stopped).
        env.run(until=cfg.horizon + DRAIN)
        for b, journal in enumerate(self.journals):
            if journal:
                self._deliver(journal, env.now)
                self.journals[b] = []
        self.res.counts["delivered_after_drain"] += self.journal_taps
        self.journal_taps = 0
        t_drain, c_drain = time.perf_counter(), time.thread_time()
        self._settle()
        t_end, c_end = time.perf_counter(), time.thread_time()
        self._finish()
        # Wall clock (perf_counter) and this thread's CPU time (thread_time: the shard's own,
        # even where a worker runs several shards in threads); the parts of the day inside
        # the core and the card taps are timed per call, by the cheaper wall clock.
        self.res.wall.update({"day": t_day - t_start, "drain": t_drain - t_day,
                              "settle": t_end - t_drain, "day_in_core": self.t_core,
                              "day_in_card_taps": self.t_card})
        self.res.cpu.update({"day": c_day - c_start, "drain": c_drain - c_day,
                             "settle": c_end - c_drain})
        self.stop()
        return self.res

    def stop(self) -> None:
        """End the processes still waiting (the links cycle for ever).  Their suspended
        frames hold this model; closed, they let it go as soon as nothing else refers to it,
        without a scan by the cyclic garbage collector (see ``sim.runner.run_shard``)."""
        for process in self._started:
            process.close()
        self._started.clear()

    def _sampler(self) -> Generator[Any, Any, None]:
        env, cfg = self.env, self.cfg
        ts: list[float] = []
        journal: list[int] = []
        queued: list[int] = []
        span = cfg.horizon - cfg.start
        while env.now <= cfg.horizon:
            ts.append(env.now)
            journal.append(self.journal_taps)
            queued.append(self.queued_taps)
            if self.progress is not None:
                self.progress((env.now - cfg.start) / span)
            if env.now + cfg.sample_every > cfg.horizon:
                break
            yield env.timeout(cfg.sample_every)
        self.res.backlog_t = np.array(ts)
        self.res.backlog_journal = np.array(journal, dtype=np.int64)
        self.res.backlog_queue = np.array(queued, dtype=np.int64)

    def _link(self, b: int) -> Generator[Any, Any, None]:
        env, links, u = self.env, self.links, self.u
        up = links.first_state(u)
        while True:
            if up:
                yield env.timeout(links.up_time(u))
            since = env.now
            down = links.down_time(u)
            links.go_down(b, since, since + down)
            yield env.timeout(down)
            links.come_up(b)
            up = True
            if self.purse_journals[b]:
                self.purse_sent.extend(self.purse_journals[b])
                self.purse_journals[b] = []
            self._flush(b)

    def _bus(self, b: int, bus: Bus) -> Generator[Any, Any, None]:
        env, cfg, city = self.env, self.cfg, self.city
        u = self.u
        block = city.blocks[bus.block]
        horizon = cfg.horizon
        capacity = cfg.capacity
        dcfg = cfg.dwell
        expected = self.table.expected
        ride_p = self.table.ride_p
        pop_n = self.pop.n
        cash_share = cfg.population.cash
        res = self.res
        counts = res.counts
        dwells = self._dwells
        for trip in block.trips:
            start = trip.start + bus.offset
            if start >= horizon:
                break
            if env.now < start:
                yield env.timeout(start - env.now)
            pat = city.patterns[trip.pattern]
            route = pat.route_id
            tap_off = route in self.tap_off_routes
            stops = pat.stops
            runs = pat.run_times
            n = len(stops)
            weights = self._stop_weights(bus.replica, trip.pattern, n)
            onboard: dict[int, list[int]] = {}
            load = 0
            res.trips += 1
            for i in range(n):
                now = env.now
                if now >= horizon:
                    return
                stop_id = stops[i]
                outbox: list[SimTap] = []
                # Alighting: riders bound here; card riders tap off where the fare needs it.
                alight = onboard.pop(i, None)
                n_alight = 0
                pay_alight = 0.0
                if alight:
                    n_alight = len(alight)
                    load -= n_alight
                    counts["alightings"] += n_alight
                    if tap_off:
                        when = self.when(now)
                        for c in alight:
                            if c >= 0:
                                pay_alight += self._tap(b, c, now, when, stop_id, route,
                                                        "tap_off", outbox, True)
                # Boarding: everyone who came since the last bus of this pattern, up to room.
                n_board = 0
                pay_board = 0.0
                if i < n - 1:
                    key = (bus.replica, trip.pattern, i)
                    last = self._last.get(key, cfg.start)
                    waiting = self._left.get(key, 0) + u.poisson(expected(last, now) * weights[i])
                    self._last[key] = now
                    room = capacity - load
                    n_board = waiting if waiting < room else room
                    self._left[key] = waiting - n_board
                    if n_board:
                        counts["boardings"] += n_board
                        when = self.when(now + 1.0)
                        action = "tap_on" if tap_off else "tap"
                        for _ in range(n_board):
                            dest = i + u.geometric(ride_p)
                            if dest >= n:
                                dest = n - 1
                            if u.u() < cash_share:
                                c = -1
                                pay_board += dcfg.handle_cash
                                counts["cash"] += 1
                            else:
                                c = int(u.u() * pop_n)
                                secs = self._tap(b, c, now, when, stop_id, route, action,
                                                 outbox, False)
                                if secs < 0:  # refused: pays cash instead
                                    secs = -secs + dcfg.decline_retry + dcfg.handle_cash
                                    c = -1
                                    counts["cash_after_decline"] += 1
                                pay_board += secs
                            lst = onboard.get(dest)
                            if lst is None:
                                onboard[dest] = [c]
                            else:
                                lst.append(c)
                        load += n_board
                d = dwell(dcfg, n_alight, n_board, pay_board, pay_alight)
                if self.stops is not None:
                    self.stops.append(StopVisit(b, trip.trip_id, i, now, n_alight, n_board,
                                                pay_board, pay_alight, d, runs[i] if i < n - 1
                                                else 0.0))
                if d > 0.0:
                    dwells.append(d)
                    res.dwell_sum += d
                    res.dwell_unpaid_sum += dwell(dcfg, n_alight, n_board, 0.0, 0.0)
                    res.served_stops += 1
                if outbox:
                    self._send(b, outbox, now)
                yield env.timeout(d + runs[i] if i < n - 1 else d)
            res.lateness_sum += max(env.now - (start + pat.duration), 0.0)

    def _stop_weights(self, replica: int, pattern: int, n: int) -> list[float]:
        key = (replica, pattern)
        w = self._weights.get(key)
        if w is None:
            raw = self.rng.gamma(4.0, 0.25, size=n)
            raw[-1] = 0.0  # nobody boards at the terminus
            w = self._weights[key] = raw.tolist()
        return w

    # --- a tap --------------------------------------------------------------------------

    def _tap(self, b: int, c: int, now: float, when: dt.datetime, stop_id: str, route: str,
             action: str, outbox: list[SimTap], off: bool) -> float:
        """One card tap; the seconds it adds to the dwell (negative: refused at the gate)."""
        card = self.cards.get(c) or self.card(c, now)
        res = self.res
        counts = res.counts
        atc = self._atc[c] = (self._atc[c] + 1) & 0xFFFF
        seq = self._seq[b] = self._seq[b] + 1
        vid = self._vid[b]
        tap_id = f"{vid}:{seq}"
        # Offline, the tap may reach the core after its state has moved: always a real one.
        online = self.links.is_up(b, now)
        crypt = not online or self.core.needs_cryptogram(card.token)
        t0 = perf_counter()
        fare = 0
        if self._path[c] == CEMV:
            ct = self.taps.quickpass(card, atc, self.cfg.kernel_amount, when, self.u, crypt)
            secs = self.cfg.dwell.handle_cemv + ct.latency
            self.t_card += perf_counter() - t0
        else:
            quote = self.core.epurse_quote(SimTap(tap_id, vid, card, when, stop_id, route,
                                                  action, atc, b"", b"", "tunion"))
            t1 = perf_counter()
            ct = self.taps.epurse(card, atc, max(quote.fare, 0), self._balance[c], when, b,
                                  self.u, crypt)
            secs = self.cfg.dwell.handle_tunion + ct.latency
            self.t_core += t1 - t0
            self.t_card += perf_counter() - t1
            if ct.epurse:
                self.core.epurse_commit(quote)
                self._balance[c] = ct.balance_after
                fare = quote.fare
                res.money["epurse_fares"] += max(fare, 0)
                res.money["epurse_refunds_owed"] += max(-fare, 0)
        latency = ct.latency
        self._latencies.append(latency)
        counts["taps"] += 1
        # The validator's verdict (terminal.decisions): the card's word, then the deny list
        # (as this bus knows it; never for a tap-off, nor for the closed-loop purse).
        listed = not off and not ct.epurse and self.deny.refuses(b, card.token, now)
        verdict = self._decide(ct.result, listed)
        if verdict.outcome is not _ACCEPTED:
            if verdict.outcome is TapOutcome.DENY_LISTED:
                reason = "deny-listed at the validator"
            else:
                reason = f"{'kernel' if not ct.accepted else 'validator'}: {verdict.reason}"
            res.gate_declines[reason] += 1
            counts["declined_at_gate"] += 1
            self._paths.append(DECLINED)
            if self.tap_log is not None:
                self.tap_log.append(TapTrace(b, now, c, DECLINED, latency, 0, 0, reason))
            return -secs
        path = EPURSE if ct.epurse else QUICKPASS_ONLINE if online else QUICKPASS_OFFLINE
        self._paths.append(path)
        if self.tap_log is not None:
            self.tap_log.append(TapTrace(b, now, c, path, latency, max(fare, 0), max(-fare, 0),
                                         None))
        if ct.epurse:
            counts["taps_epurse"] += 1
            group = 1 if self._other[c] else 0
            rec = PurseRecord(tap_id, now, group, max(fare, 0), ct.result)
            (self.purse_sent if online else self.purse_journals[b]).append(rec)
            if self.tap_log is not None:
                self.tap_log[-1] = self.tap_log[-1]._replace(
                    purse_issuer=card.purse_issuer, journaled=not online)
            return secs
        counts["taps_quickpass"] += 1  # accepted at the gate, on its way to the back office
        outbox.append(SimTap(tap_id, vid, card, when, stop_id, route, action, ct.atc, ct.arqc,
                             ct.ac_data, "cemv"))
        return secs

    def _decide(self, result: TapResult, listed: bool) -> Verdict:
        """``terminal.decisions.decide`` for this tap; a pure function of the kernel's result
        and the deny-list answer, so kept per result object (calibrated taps share a few
        results, one per card class; a full-fidelity tap's own result is used once)."""
        key = (id(result), listed)
        hit = self._verdicts.get(key)
        if hit is not None and hit[0] is result:
            return hit[1]
        verdict = decide(result, deny_listed=listed, duplicate=False, policy=self.policy)
        if len(self._verdicts) < 1024:
            self._verdicts[key] = (result, verdict)  # the result kept alive: its id stays its
        return verdict

    # --- uplink -------------------------------------------------------------------------

    def _send(self, b: int, taps: list[SimTap], now: float) -> None:
        if self.links.is_up(b, now):
            self._submit(taps)
        else:
            self.journals[b].extend(taps)
            self.journal_taps += len(taps)
            self.res.counts["journaled"] += len(taps)

    def _submit(self, taps: list[SimTap]) -> None:
        self.queued_taps += len(taps)

        def served(t: float) -> None:
            self.queued_taps -= len(taps)
            self._deliver(taps, t)

        self.queue.submit(len(taps), served, self.cfg.link.latency)

    def _flush(self, b: int) -> None:
        journal = self.journals[b]
        if not journal:
            return
        self.journals[b] = []
        self.journal_taps -= len(journal)
        step = self.cfg.link.max_batch
        for i in range(0, len(journal), step):
            self._submit(journal[i:i + step])

    def _deliver(self, taps: list[SimTap], t: float) -> None:
        t0 = perf_counter()
        reply = self.core.ingest(taps, self.when(t))
        self.t_core += perf_counter() - t0
        self._heard(reply, t)

    def _heard(self, reply: CoreReply, t: float) -> None:
        res = self.res
        res.counts["core_accepted"] += reply.accepted
        res.counts["core_duplicates"] += reply.duplicates
        res.counts["core_rejected"] += reply.rejected
        for kind, code in reply.events:
            res.core_events[kind] += 1
            if kind == "declined":
                res.issuer_declines[code] += 1
        for token, code in reply.deny_add:
            self.deny.add(token, t)
            res.deny_reasons[code] += 1
            res.counts["deny_list_additions"] += 1
            if t <= self.cfg.horizon:  # while the fleet runs: how long until buses know
                delays = self.links.propagation(t)
                res.propagation.append((float(delays.mean()), float(np.quantile(delays, 0.95)),
                                        float(delays.max())))
        for token in reply.deny_remove:
            self.deny.remove(token, t)
        if reply.alerts:
            res.alerts.update(reply.alerts)

    # --- after the day ------------------------------------------------------------------

    def _clear(self) -> None:
        """The day's e-purse clearing at the end of the service period: records sent by then
        are cleared or refused, records still journaled on buses are pending.  Full fidelity
        runs the real clearing core (``clearing.core.clear_day``: each TAC verified with the
        TEST issuers' keys); calibrated taps carry no TAC, so what was sent counts cleared."""
        out = self.res.clearing
        operator = self.cfg.operator_id
        decided: list[tuple[PurseRecord, str | None]]
        if self.taps.fidelity == "full":
            decided = _clear_full(self.purse_sent, operator, self.cfg.date.isoformat(),
                                  self.t0)
        else:
            decided = [(r, None) for r in self.purse_sent]
        issuers = (HOME_ISSUER, OTHER_ISSUER)
        for r, reason in decided:
            what = "cleared" if reason is None else "refused"
            out[f"{ISSUER_GROUPS[r.group]}:{what}"] += r.fare
            out[f"{ISSUER_GROUPS[r.group]}:{what}_n"] += 1
            if reason is None:
                out[f"position:{issuers[r.group]}:{operator}"] += r.fare
            else:
                out[f"reason:{reason}"] += 1
        for journal in self.purse_journals:
            for r in journal:
                out[f"{ISSUER_GROUPS[r.group]}:pending"] += r.fare
                out[f"{ISSUER_GROUPS[r.group]}:pending_n"] += 1

    def _settle(self) -> None:
        """Close the service day, then run the recovery schedule with holders topping up."""
        cfg = self.cfg
        day_end = self.when(24 * 3600.0 + 4 * 3600.0)
        last = max(self.when(self.env.now), day_end)
        self._heard(self.core.close_day(last), self.env.now)
        money = self.core.money()
        for k, v in money.items():
            self.res.money[f"day_{k}"] = v
        if cfg.settle_days == 0:
            return
        debtors = [self.by_token[t] for t in sorted(self.deny.added) if t in self.by_token
                   and t not in self.deny.removed]
        topups: dict[int, list[int]] = {}
        for c in debtors:
            if self._state[c] == INSUFFICIENT and self.u.u() < cfg.population.topup:
                topups.setdefault(1 + self.u.below(cfg.settle_days), []).append(c)
        for day in range(1, cfg.settle_days + 1):
            now = last + dt.timedelta(days=day)
            for c in topups.get(day, []):
                self.core.top_up(self.cards[c], TOPUP_AMOUNT, now)
                self.res.counts["topups"] += 1
            self._heard(self.core.recover(now), self.env.now)
        for k, v in self.core.money().items():
            self.res.money[f"final_{k}"] = v

    def _finish(self) -> None:
        res = self.res
        skipped = getattr(self.taps, "skipped", 0)
        if skipped:
            res.counts["cryptograms_left_zero"] += skipped
        kernel = getattr(self.taps, "kernel", None)
        if kernel is not None:  # full fidelity: the kernel's CPU time, measured live
            res.wall["kernel_live_host"] = kernel.host_seconds
            res.wall["kernel_live_taps"] = float(kernel.taps)
        res.cards = self.pop.n
        res.cards_seen = len(self.cards)
        res.population = self.pop.counts()
        lat = np.frombuffer(self._latencies, dtype=float)
        res.latency_hist = histogram(lat, LATENCY_BIN, LATENCY_BINS)
        paths = np.frombuffer(self._paths, dtype=np.int8)
        res.latency_by_path = {name: histogram(lat[paths == k], LATENCY_BIN, LATENCY_BINS)
                               for k, name in enumerate(PAYMENT_PATHS)}
        res.dwell_hist = histogram(np.frombuffer(self._dwells, dtype=float), DWELL_BIN,
                                   DWELL_BINS)
        res.wait_hist = histogram(np.frombuffer(self.queue.waits, dtype=float), WAIT_BIN,
                                  WAIT_BINS)
        res.queue_busy = self.queue.busy
        res.queue_messages = self.queue.served
        res.queue_max = self.queue.in_queue_max
        res.sim_seconds = self.cfg.horizon - self.cfg.start
        res.link_outages = self.links.outages
        res.link_down_seconds = self.links.down_seconds



def _clear_full(records: list[PurseRecord], operator: str, day: str,
                t0: dt.datetime) -> list[tuple[PurseRecord, str | None]]:
    """Each sent record through the real clearing core, with the kernel's TAC and fields."""
    from clearing.core import PurseRecord as Cleared  # noqa: PLC0415
    from clearing.core import clear_day  # noqa: PLC0415
    from emv.epurse.issuers import TEST_ISSUERS  # noqa: PLC0415

    by_id = {r.tap_id: r for r in records}
    base_us = int(t0.timestamp() * 1e6)
    rows = [Cleared(
        tap_id=r.tap_id, issuer_id=res.epurse_issuer, card_number=res.epurse_card_number,
        card_serial=res.epurse_serial or 0, amount=r.fare, tac=res.epurse_tac or "",
        psam_id=res.psam_id or "", psam_serial=res.psam_serial or 0,
        key_version=res.epurse_key_version, algorithm_id=res.epurse_algorithm_id,
        tac_time=res.epurse_when, time_us=base_us + round(r.time * 1e6),
        operator_id=operator, day=day) for r in records for res in (r.result,)]
    return [(by_id[d.record.tap_id], None if d.reason is None else str(d.reason))
            for d in clear_day(rows, (), TEST_ISSUERS)]
