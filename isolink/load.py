"""A load generator for hosts that speak the dialect: open-loop transit authorizations.

The requests are 0100 account verifications as a transit validator's first tap of the day
makes them: amount zero, a real ARQC from a virtual card (``isolink.taps``), the card's
PAN token in field 48.  They are all built and encoded before the clock starts, so the
generator spends the run sending and reading.

Open loop, no coordinated omission: the send times are fixed in advance (Poisson arrivals
at ``rate``, or a fixed interval), independent of the answers; a request's latency is
measured from its *scheduled* send time, not from when it was actually written.  A host
that falls behind therefore shows its queueing in the latencies, and so does a generator
that falls behind (``send_lag_ms`` says by how much, so the two can be told apart).  A
request without an answer ``timeout`` seconds after its scheduled time is a timeout; an
answer after that is counted as late and not as a latency.

Latency percentiles are nearest-rank over the answered requests, overall and per second
of the schedule.

One card's requests all go on one connection (card number modulo connections): an issuer
remembers a window of recent ATCs per card (issuer/README.md), and a card tapping
thousands of times a second over several connections would arrive out of ATC order by
more than that window and be answered "59" (replayed).  Use many cards (``--cards``) to
spread the load over the connections.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from isolink.dialect import Dialect, MessageFormatError
from isolink.framing import FrameError, FrameReader, frame
from isolink.messages import icc_data, transmission_time
from isolink.taps import CardTapper

ARRIVALS = ("poisson", "fixed")
MAX_STAN = 999_999
ATC_MAX = 0xFFFF


class LoadError(ValueError):
    """A load run that cannot be planned or started (says what)."""


@dataclass(frozen=True)
class LoadSettings:
    host: str
    port: int
    rate: float  # requests per second
    duration: float  # seconds of schedule
    arrivals: str = "poisson"
    connections: int = 4
    timeout: float = 5.0
    seed: int = 1
    acquirer: str = "10000000001"
    merchant: str = "tapsim-transit"
    terminal: str = "VAL00001"
    currency: str = "CNY"
    country: str = "156"


@dataclass(frozen=True)
class Planned:
    offset_s: float  # scheduled send time from the start of the run
    stan: str
    data: bytes  # framed
    card: int  # which card tapped: its requests all go on one connection, in ATC order


def schedule(rate: float, duration: float, arrivals: str, rng: random.Random) -> list[float]:
    """Send times (seconds from the start) of an open-loop run."""
    if arrivals == "fixed":
        return [i / rate for i in range(math.floor(rate * duration))]
    if arrivals != "poisson":
        raise LoadError(f"arrivals must be one of {', '.join(ARRIVALS)}, not {arrivals!r}")
    out: list[float] = []
    t = rng.expovariate(rate)
    while t < duration:
        out.append(t)
        t += rng.expovariate(rate)
    return out


def plan(dialect: Dialect, tappers: Sequence[CardTapper], tokens: Sequence[str],
         settings: LoadSettings, *, now: datetime | None = None) -> list[Planned]:
    """Every request of the run, encoded and framed (taps round-robin over the cards)."""
    if not tappers or len(tappers) != len(tokens):
        raise LoadError("the run needs at least one card, each with its PAN token")
    rng = random.Random(settings.seed)
    times = schedule(settings.rate, settings.duration, settings.arrivals, rng)
    if len(times) > MAX_STAN:
        raise LoadError(f"{len(times)} requests: at most {MAX_STAN} per run (STANs are 6 "
                        "digits); lower --rate or --duration")
    per_card = math.ceil(len(times) / len(tappers))
    for t in tappers:
        if t.atc + per_card > ATC_MAX:
            raise LoadError(f"card {t.profile.name}: {per_card} taps from ATC {t.atc} pass "
                            f"{ATC_MAX}; use more cards or a lower --atc-from")
    start = now or datetime.now(UTC)
    currency = dialect.currency_code(settings.currency)
    kind = dialect.kind_code("account_verification")
    base: dict[str, Any] = {
        "t": "0100", "3": "000000", "4": "0" * 12, "25": kind, "32": settings.acquirer,
        "41": settings.terminal[:8].ljust(8), "42": settings.merchant[:15].ljust(15),
        "49": currency,
    }  # fmt: skip
    rrn_prefix = start.strftime("%y%j")
    out: list[Planned] = []
    for i, offset in enumerate(times):
        card = i % len(tappers)
        at = start + timedelta(seconds=offset)
        values = tappers[card].tap(amount=0, currency=currency, country=settings.country,
                                   day=at.date(), unpredictable=rng.randbytes(4))
        stan = f"{i + 1:06d}"
        fields = {**base, "7": transmission_time(at), "11": stan,
                  "37": f"{rrn_prefix}{i + 1:07d}", "48": tokens[card], "55": icc_data(values)}
        out.append(Planned(offset, stan, frame(dialect.encode(fields),
                                               dialect.max_message_bytes), card))
    return out


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """p50/p95/p99/max (nearest rank), in milliseconds, of latencies in seconds."""
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    s = sorted(values)

    def rank(q: float) -> float:
        return round(s[max(0, math.ceil(q * len(s)) - 1)] * 1000, 3)

    return {"p50": rank(0.50), "p95": rank(0.95), "p99": rank(0.99), "max": rank(1.0)}


@dataclass
class _Run:
    plan: list[Planned]
    timeout: float
    t0: float = 0.0
    sent: int = 0
    latency: list[float | None] = field(default_factory=list)
    codes: Counter[str] = field(default_factory=Counter)
    late: int = 0
    unmatched: int = 0
    bad_answers: int = 0
    send_lag_max: float = 0.0
    connection_errors: list[str] = field(default_factory=list)
    answered: int = 0


async def run_load(dialect: Dialect, settings: LoadSettings, planned: list[Planned],
                   progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Send ``planned`` on schedule to the host; the report (see :func:`report`)."""
    loop = asyncio.get_running_loop()
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(settings.connections):
            conns.append(await asyncio.open_connection(settings.host, settings.port))
    except OSError as exc:
        for _, w in conns:
            w.close()
        raise LoadError(f"cannot connect to {settings.host}:{settings.port}: "
                        f"{exc.strerror or exc}") from None
    state = _Run(planned, settings.timeout, latency=[None] * len(planned))
    by_stan = {p.stan: i for i, p in enumerate(planned)}
    cpu0, wall0 = time.process_time(), time.perf_counter()
    state.t0 = loop.time() + 0.05
    readers = [asyncio.create_task(_read(r, dialect, state, by_stan, loop)) for r, _ in conns]
    ticker = asyncio.create_task(_progress(state, settings, loop, progress)) if progress else None
    try:
        await _send(state, [w for _, w in conns], loop)
        end = state.t0 + (planned[-1].offset_s if planned else 0.0) + settings.timeout
        while state.answered < len(planned) and loop.time() < end:
            if all(t.done() for t in readers):
                break
            await asyncio.sleep(0.01)
    finally:
        for t in (*readers, *([ticker] if ticker else [])):
            t.cancel()
        for _, w in conns:
            w.close()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return report(settings, dialect, state, cpu_s=cpu, wall_s=wall)


async def _send(state: _Run, writers: list[asyncio.StreamWriter],
                loop: asyncio.AbstractEventLoop) -> None:
    n = len(writers)
    i = 0
    planned = state.plan
    while i < len(planned):
        now = loop.time()
        due = state.t0 + planned[i].offset_s
        if due > now:
            await asyncio.sleep(due - now)
            continue
        while i < len(planned) and state.t0 + planned[i].offset_s <= now:
            w = writers[planned[i].card % n]
            if not w.is_closing():
                w.write(planned[i].data)
            state.send_lag_max = max(state.send_lag_max, now - state.t0 - planned[i].offset_s)
            state.sent += 1
            i += 1
        for w in writers:
            if w.transport.get_write_buffer_size() > 1 << 20:
                await w.drain()
        await asyncio.sleep(0)


async def _read(reader: asyncio.StreamReader, dialect: Dialect, state: _Run,
                by_stan: dict[str, int], loop: asyncio.AbstractEventLoop) -> None:
    frames = FrameReader(dialect.max_message_bytes)
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            now = loop.time()
            for message in frames.receive_data(data):
                try:
                    fields = dialect.decode(message)
                except MessageFormatError:
                    state.bad_answers += 1
                    continue
                i = by_stan.get(str(fields.get("11")))
                if i is None or state.latency[i] is not None:
                    state.unmatched += 1
                    continue
                latency = now - state.t0 - state.plan[i].offset_s
                if latency > state.timeout:
                    state.late += 1
                    continue
                state.latency[i] = latency
                state.answered += 1
                state.codes[str(fields.get("39", "??"))] += 1
    except (FrameError, ConnectionError, OSError) as exc:
        state.connection_errors.append(str(exc) or type(exc).__name__)


async def _progress(state: _Run, settings: LoadSettings, loop: asyncio.AbstractEventLoop,
                    progress: Callable[[dict[str, Any]], None]) -> None:
    while True:
        await asyncio.sleep(1.0)
        recent = [x for x in state.latency[max(0, state.sent - 2000):state.sent] if x is not None]
        progress({"elapsed_s": round(loop.time() - state.t0, 1), "duration_s": settings.duration,
                  "sent": state.sent, "answered": state.answered,
                  "p99_ms": percentiles(recent)["p99"]})


def report(settings: LoadSettings, dialect: Dialect, state: _Run, *, cpu_s: float,
           wall_s: float) -> dict[str, Any]:
    """The run's figures: totals, latency percentiles, per-second buckets, response codes."""
    answered = [x for x in state.latency if x is not None]
    timeouts = len(state.plan) - len(answered)
    seconds = math.ceil(settings.duration)
    scheduled = [0] * seconds
    lats: list[list[float]] = [[] for _ in range(seconds)]
    for i, p in enumerate(state.plan):
        s = min(int(p.offset_s), seconds - 1)
        scheduled[s] += 1
        x = state.latency[i]
        if x is not None:
            lats[s].append(x)
    buckets = [{"second": s, "scheduled": scheduled[s], "answered": len(lats[s]),
                "timeouts": scheduled[s] - len(lats[s]), **percentiles(lats[s])}
               for s in range(seconds)]
    last = max((p.offset_s + (state.latency[i] or 0.0) for i, p in enumerate(state.plan)
                if state.latency[i] is not None), default=0.0)
    return {
        "target": f"{settings.host}:{settings.port}",
        "dialect": f"{dialect.name} v{dialect.version}",
        "arrivals": settings.arrivals, "rate_per_s": settings.rate,
        "duration_s": settings.duration, "connections": settings.connections,
        "timeout_s": settings.timeout,
        "scheduled": len(state.plan), "sent": state.sent, "answered": len(answered),
        "timeouts": timeouts, "late": state.late, "unmatched": state.unmatched,
        "bad_answers": state.bad_answers, "connection_errors": state.connection_errors,
        "throughput_per_s": round(len(answered) / last, 1) if last > 0 else 0.0,
        "latency_ms": percentiles(answered),
        "send_lag_ms": round(state.send_lag_max * 1000, 3),
        "codes": dict(sorted(state.codes.items())),
        "per_second": buckets,
        "generator_cpu_s": round(cpu_s, 3), "generator_wall_s": round(wall_s, 3),
    }  # fmt: skip
