"""A fleet of simulated validators in one process: the back office's capacity test.

``tapsim load validators`` runs N validators, each with its own durable journal
(:class:`~terminal.journal.Journal`), its own MQTT uplink (:class:`~terminal.uplink.Uplink`,
the real code: QoS 1 publish, end-to-end commit acknowledgements, resends) and its own broker
identity, and measures how long a tap takes from the moment it was due to the moment the back
office's ``ack/1`` names it (wire/README.md, "End-to-end acknowledgement")::

    fleet = prepare(settings, terminal, cards)        # every tap's record, before the clock
    report = await run_fleet(settings, fleet, stop)   # journal on schedule, wait for acks

The taps are built before the clock starts: for each tap the real kernel
(:func:`emv.kernel.run` through :class:`~terminal.validator.Validator`) reads a virtual card
(its ATC rises, it computes a fresh ARQC and signs its fDDA data), about 0.5-1 ms a tap,
which at the rates a back office takes would compete with the journals and uplinks for the
CPU.  At its due time a tap's record gets its journal's sequence, tap id and the wall-clock
time, is written to the journal durably (``synchronous=FULL``, as a validator does; up to
eight writer threads, a validator's taps always on the same one) and the uplink is woken.

Open loop, no coordinated omission: due times are fixed in advance (Poisson arrivals at the
total rate, or even spacing), never wait for the back office, and latency is measured from
the *due* time, so a back office that falls behind shows its queueing; ``journal_lag_ms``
says how late the generator itself wrote the taps, to tell the two apart.  A tap not
confirmed by the end of the drain wait is counted as uncommitted.  No acknowledgement at all
within ``ack_timeout`` of the first tap stops the run: nothing is answering on the broker.

Validator ``i`` is ``<prefix><i:04d>`` (``load-0001`` ...); tap ``k`` goes to validator
``k mod N`` and card ``k mod C``.  The back office refuses an ATC it has seen for a card
(replay), so a second run against the same database needs ``atc_from`` above the first
run's ATCs.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from emv.card.card import VirtualCard
from emv.card.image import personalise
from emv.card.profile import CardProfile
from emv.card.state import CardState
from emv.kernel import TerminalConfig
from terminal.decisions import TapPolicy
from terminal.denylist import DenyList
from terminal.journal import Journal, JournalError
from terminal.readers import VirtualReader
from terminal.uplink import BrokerSettings, Uplink, validator_client_id
from terminal.validator import Validator, ValidatorConfig
from wire.aio import bounded, wait_event
from wire.brokerurl import BrokerUrl
from wire.codec import encode
from wire.messages import TapOutcome, TapRecord
from wire.topics import check_validator_id

ARRIVALS = ("poisson", "fixed")
MAX_VALIDATORS = 9999
ATC_MAX = 0xFFFF
START_DELAY_S = 0.05  # from the end of the set-up to the first due time
WRITER_THREADS = 8  # journal writers (fsync releases the GIL: they overlap)


class FleetLoadError(RuntimeError):
    """A load run that cannot start or cannot go on (says what, never a password)."""


@dataclass(frozen=True)
class FleetSettings:
    """One run: the broker, the fleet, the schedule and how long to wait for the back office."""

    broker: BrokerUrl
    validators: int
    rate: float  # taps per second, the whole fleet
    duration: float  # seconds of schedule
    arrivals: str = "poisson"
    seed: int = 1
    id_prefix: str = "load-"
    passwords: Mapping[str, str] | None = field(default=None, repr=False)  # validator -> pw
    journal_dir: Path | None = None  # None: a temporary directory, removed afterwards
    drain: float = 30.0  # seconds after the schedule to wait for the last acknowledgements
    ack_timeout: float = 10.0  # no acknowledgement at all this long after the first tap: stop
    connect_timeout: float = 10.0
    commit_timeout: float = 10.0  # the uplink's resend timer (terminal run --commit-timeout)
    atc_from: int = 0
    operator_id: str = "OP1"
    stop_id: str = "S01"
    route_id: str = "1"
    amount: int = 200
    # False: journals without an fsync per tap (a real validator always syncs); lowers the
    # generator's own cost when it, not the back office, is what limits a run.
    journal_fsync: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.validators <= MAX_VALIDATORS:
            raise FleetLoadError(f"validators: 1 to {MAX_VALIDATORS}, not {self.validators}")
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise FleetLoadError(f"rate must be a positive number of taps/s, not {self.rate}")
        if not (math.isfinite(self.duration) and self.duration > 0):
            raise FleetLoadError(f"duration must be positive seconds, not {self.duration}")
        if self.arrivals not in ARRIVALS:
            raise FleetLoadError(f"arrivals must be one of {', '.join(ARRIVALS)}, "
                                 f"not {self.arrivals!r}")
        try:
            for vid in self.validator_ids():
                check_validator_id(vid)
        except ValueError as exc:
            raise FleetLoadError(f"validator id prefix {self.id_prefix!r}: {exc}") from None

    def validator_ids(self) -> list[str]:
        return [f"{self.id_prefix}{i:04d}" for i in range(1, self.validators + 1)]


def schedule(rate: float, duration: float, arrivals: str, rng: random.Random) -> list[float]:
    """Due times (seconds from the start) of an open-loop run (as ``isolink.load.schedule``)."""
    if arrivals == "fixed":
        return [i / rate for i in range(math.floor(rate * duration))]
    out: list[float] = []
    t = rng.expovariate(rate)
    while t < duration:
        out.append(t)
        t += rng.expovariate(rate)
    return out


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """p50/p95/p99/max (nearest rank), in milliseconds, of latencies in seconds (the same
    figures as ``isolink.load.percentiles``, tested equal)."""
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    s = sorted(values)

    def rank(q: float) -> float:
        return round(s[max(0, math.ceil(q * len(s)) - 1)] * 1000, 3)

    return {"p50": rank(0.50), "p95": rank(0.95), "p99": rank(0.99), "max": rank(1.0)}


@dataclass(frozen=True)
class PreparedFleet:
    """Every tap of the run, built: due offset, validator index and record (re-stamped with
    its journal's sequence, tap id and time when it is written)."""

    offsets: list[float]
    validator: list[int]
    records: list[TapRecord]
    cards: int
    prepare_s: float


def _card(profile: CardProfile, atc_from: int) -> VirtualCard:
    state = CardState()
    for app in profile.applications:
        if app.kind != "epurse":
            state.app(app.aid).atc = atc_from
    return VirtualCard(personalise(profile), state)


class PrepareCancelledError(FleetLoadError):
    """The run was stopped while its taps were being prepared."""


def prepare(settings: FleetSettings, terminal: TerminalConfig, cards: Sequence[CardProfile],
            *, progress: Callable[[int, int], None] | None = None,
            cancelled: Callable[[], bool] = lambda: False) -> PreparedFleet:
    """Tap the virtual cards once per scheduled tap with the real kernel and validator (each
    validator's own config, an empty deny list, no duplicate window: a load card taps often).

    Runs before the clock and may take a while (``progress(done, total)`` every 1,000;
    ``cancelled()`` asked every 100 taps: true raises :class:`PrepareCancelledError`)."""
    if not cards:
        raise FleetLoadError("the run needs at least one card")
    t_start = time.perf_counter()
    rng = random.Random(settings.seed)
    offsets = schedule(settings.rate, settings.duration, settings.arrivals, rng)
    per_card = math.ceil(len(offsets) / len(cards))
    if settings.atc_from + per_card > ATC_MAX:
        raise FleetLoadError(f"{per_card} taps a card from ATC {settings.atc_from} pass {ATC_MAX}:"
                             " use more cards (--cards) or a lower --atc-from")
    virtual = [_card(p, settings.atc_from) for p in cards]
    reader = VirtualReader(None, "load")
    scratch = Path(tempfile.mkdtemp(prefix="tapsim-load-prep-"))
    ids = settings.validator_ids()
    journals: list[Journal] = []
    try:
        validators: list[Validator] = []
        now = [dt.datetime.now(dt.UTC)]
        for vid in ids:
            j = Journal(scratch / f"{vid}.journal", lock=False, durable=False)
            journals.append(j)
            config = ValidatorConfig(
                validator_id=vid, operator_id=settings.operator_id, stop_id=settings.stop_id,
                route_id=settings.route_id, amount=settings.amount,
                policy=TapPolicy(duplicate_window=dt.timedelta(0)))
            validators.append(Validator(config, terminal, j, DenyList(), clock=lambda: now[0]))
        which: list[int] = []
        records: list[TapRecord] = []
        for k in range(len(offsets)):
            v = k % len(ids)
            reader.present(virtual[k % len(virtual)])
            now[0] = dt.datetime.now(dt.UTC)
            event = validators[v].tap(reader)
            if event.record is None or event.record.outcome is not TapOutcome.ACCEPTED:
                reason = event.verdict.reason if event.verdict else event.display.text
                raise FleetLoadError(f"card {cards[k % len(cards)].name}: the validator did not "
                                     f"accept its tap ({reason})")
            which.append(v)
            records.append(event.record)
            if k % 100 == 99 and cancelled():
                raise PrepareCancelledError("stopped while preparing the taps")
            if progress is not None and (k + 1) % 1000 == 0:
                progress(k + 1, len(offsets))
    finally:
        for j in journals:
            j.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return PreparedFleet(offsets, which, records, len(cards), time.perf_counter() - t_start)


class _WatchedJournal(Journal):
    """The uplink's connection to a journal, telling the run which taps the back office
    confirmed (the uplink marks them committed when their ``ack/1`` arrives)."""

    def __init__(self, path: Path, on_commit: Callable[[Iterable[str]], None]) -> None:
        super().__init__(path, lock=False, durable=False)
        self._on_commit = on_commit

    def mark_committed(self, tap_ids: Iterable[str], at: dt.datetime) -> int:
        ids = list(tap_ids)
        self._on_commit(ids)
        return super().mark_committed(ids, at)


@dataclass
class _Run:
    fleet: PreparedFleet
    t0: float = 0.0
    wall0: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    due: int = 0  # taps whose time has come (handed to the journal writer)
    journaled: int = 0
    committed: int = 0
    journal_lag: list[float] = field(default_factory=list)
    latency: list[float | None] = field(default_factory=list)
    committed_at: list[float] = field(default_factory=list)  # loop times of acks, in order
    pending: dict[str, int] = field(default_factory=dict)  # tap id -> tap index
    first_journaled: float | None = None
    journal_errors: list[str] = field(default_factory=list)
    backlog: list[tuple[int, int, int]] = field(default_factory=list)  # (second, due, committed)
    interrupted: bool = False


class _Fleet:
    """The N journals and uplinks of a run, and the writer that journals taps when due."""

    def __init__(self, settings: FleetSettings, directory: Path) -> None:
        self.settings = settings
        self.run: _Run | None = None  # set once the taps are prepared
        self.ids = settings.validator_ids()
        self.writers: list[Journal] = []
        self.watched: list[_WatchedJournal] = []
        self.uplinks: list[Uplink] = []
        self.loop = asyncio.get_running_loop()
        self._lock = threading.Lock()
        for vid in self.ids:
            path = directory / f"{vid}.journal"
            try:
                self.writers.append(Journal(path, durable=settings.journal_fsync))
                self.watched.append(_WatchedJournal(path, self._committed))
            except JournalError as exc:
                self.close()
                raise FleetLoadError(str(exc)) from None
            fields = settings.broker.fields()
            if settings.passwords is not None:  # each validator its own broker user
                fields["username"], fields["password"] = vid, settings.passwords[vid]
            broker = BrokerSettings(**fields, client_id=validator_client_id(vid))
            self.uplinks.append(Uplink(broker, self.watched[-1], vid, None,
                                       commit_timeout=settings.commit_timeout))

    def _committed(self, tap_ids: Iterable[str]) -> None:
        run = self.run
        if run is None:
            return
        now = self.loop.time()
        for tap_id in tap_ids:
            i = run.pending.pop(tap_id, None)
            if i is None:
                continue
            run.latency[i] = now - run.t0 - run.fleet.offsets[i]
            run.committed += 1
            run.committed_at.append(now)

    def journal(self, i: int) -> None:
        """Write tap ``i`` to its validator's journal (the writer thread), then wake the uplink."""
        run = self.run
        assert run is not None
        v = run.fleet.validator[i]
        journal = self.writers[v]
        seq = journal.last_seq + 1
        when = run.wall0 + dt.timedelta(seconds=run.fleet.offsets[i])
        record = msgspec.structs.replace(run.fleet.records[i], seq=seq, time=when,
                                         tap_id=f"{self.ids[v]}:{journal.epoch}:{seq}")
        run.pending[record.tap_id] = i
        try:
            journal.append(seq, record.tap_id, when, record.pan_token, record.outcome.value,
                           encode(record))
        except JournalError as exc:
            run.pending.pop(record.tap_id, None)
            run.journal_errors.append(str(exc))
            return
        now = time.monotonic()  # the loop's clock (asyncio's default)
        with self._lock:  # several writer threads
            if run.first_journaled is None:
                run.first_journaled = now
            run.journal_lag.append(now - run.t0 - run.fleet.offsets[i])
            run.journaled += 1
        self.uplinks[v].notify()

    def close(self) -> None:
        for j in (*self.writers, *self.watched):
            j.close()


def _connect_error(uplinks: Sequence[Uplink], ids: Sequence[str], url: str) -> str | None:
    for up, vid in zip(uplinks, ids, strict=True):
        if up.stats.connects == 0 and up.stats.last_error:
            err = up.stats.last_error
            if "errno" in err.lower() or "timed out" in err.lower():  # no MQTT answer at all
                return f"cannot reach the broker at {url}: {err}"
            return f"the broker at {url} refused validator {vid}: {err}"
    return None


async def _wait_connected(fleet: _Fleet, settings: FleetSettings, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.connect_timeout
    url = settings.broker.url()
    while loop.time() < deadline and not stop.is_set():
        if all(u.connected.is_set() for u in fleet.uplinks):
            return
        error = _connect_error(fleet.uplinks, fleet.ids, url)
        if error is not None:
            raise FleetLoadError(error)
        await asyncio.sleep(0.05)
    if stop.is_set():
        return
    up = sum(u.connected.is_set() for u in fleet.uplinks)
    raise FleetLoadError(f"only {up} of {len(fleet.uplinks)} validators connected to {url} in "
                         f"{settings.connect_timeout:g} s"
                         + (f": {_connect_error(fleet.uplinks, fleet.ids, url)}"
                            if _connect_error(fleet.uplinks, fleet.ids, url) else ""))


async def run_fleet(settings: FleetSettings, make_taps: Callable[[], PreparedFleet],
                    stop: asyncio.Event,
                    progress: Callable[[dict[str, Any]], None] | None = None
                    ) -> dict[str, Any] | None:
    """Connect the fleet, build its taps (``make_taps``, in a thread, once every validator
    is connected: a broker that refuses them is said at once), journal them on schedule
    through the N uplinks, wait for the acknowledgements; the report.

    ``stop`` set (Ctrl-C): no more taps, no drain wait, the report says ``interrupted``;
    None when it came before the first tap."""
    loop = asyncio.get_running_loop()
    own_dir = settings.journal_dir is None
    directory = Path(tempfile.mkdtemp(prefix="tapsim-load-")) if settings.journal_dir is None \
        else settings.journal_dir
    try:
        directory.mkdir(parents=True, exist_ok=True)
        f = _Fleet(settings, directory)
    except OSError as exc:
        raise FleetLoadError(f"journal directory {directory}: {exc.strerror or exc}") from None
    except BaseException:
        if own_dir:
            shutil.rmtree(directory, ignore_errors=True)
        raise
    link_stop = asyncio.Event()
    links = [asyncio.create_task(u.run(link_stop)) for u in f.uplinks]
    # Validators write their journals in parallel (each its own device in a bus); one thread
    # for all made the generator's fsyncs the bottleneck at 400 taps/s.  A validator always
    # uses the same thread, so its taps are journaled in order.
    executors = [ThreadPoolExecutor(1, thread_name_prefix=f"load-journal-{w}")
                 for w in range(min(settings.validators, WRITER_THREADS))]
    ticker: asyncio.Task[None] | None = None
    run: _Run | None = None
    try:
        await _wait_connected(f, settings, stop)
        if stop.is_set():
            return None
        building = asyncio.ensure_future(asyncio.to_thread(make_taps))
        await asyncio.wait({building, asyncio.ensure_future(stop.wait())},
                           return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():  # prepare() sees it within 100 taps and raises PrepareCancelledError
            await asyncio.wait({building})
            if not building.cancelled():
                building.exception()  # retrieved: PrepareCancelledError, or None if it had finished
            return None
        fleet = building.result()
        cpu0, wall_start = time.process_time(), time.perf_counter()
        run = _Run(fleet, latency=[None] * len(fleet.offsets))
        run.t0 = loop.time() + START_DELAY_S
        run.wall0 = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=START_DELAY_S)
        f.run = run
        ticker = asyncio.create_task(_tick(run, f, settings, progress))
        await _schedule(run, f, executors, stop, settings)
        if not stop.is_set():
            await _drain(run, settings, stop)
        run.interrupted = stop.is_set()
    finally:
        if ticker is not None:
            ticker.cancel()
        for executor in executors:
            executor.shutdown(wait=True)
        link_stop.set()
        for task in links:
            with contextlib.suppress(Exception):  # stopping: the report is what matters now
                await bounded(task, 1.0)
        stats = [u.stats for u in f.uplinks]
        f.close()
        if own_dir:
            shutil.rmtree(directory, ignore_errors=True)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall_start
    _sample(run, max(0, math.ceil(loop.time() - run.t0) - 1))
    return report(settings, run, stats, cpu_s=cpu, wall_s=wall,
                  journal_dir=None if own_dir else directory)


async def _schedule(run: _Run, fleet: _Fleet, executors: Sequence[ThreadPoolExecutor],
                    stop: asyncio.Event, settings: FleetSettings) -> None:
    loop = asyncio.get_running_loop()
    offsets = run.fleet.offsets
    i = 0
    while i < len(offsets) and not stop.is_set():
        now = loop.time()
        due = run.t0 + offsets[i]
        if due > now:
            await wait_event(stop, due - now)
            continue
        while i < len(offsets) and run.t0 + offsets[i] <= now:
            executors[run.fleet.validator[i] % len(executors)].submit(fleet.journal, i)
            run.due += 1
            i += 1
        _check_answering(run, settings, now)


def _check_answering(run: _Run, settings: FleetSettings, now: float) -> None:
    if run.committed == 0 and run.first_journaled is not None \
            and now - run.first_journaled > settings.ack_timeout:
        raise FleetLoadError(
            f"no commit ack in {settings.ack_timeout:g} s — is `tapsim backoffice run` running "
            f"on this broker ({settings.broker.url()})?")


async def _drain(run: _Run, settings: FleetSettings, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.drain
    while loop.time() < deadline and not stop.is_set():
        if run.journaled + len(run.journal_errors) == len(run.fleet.offsets) \
                and not run.pending:
            return
        _check_answering(run, settings, loop.time())
        await wait_event(stop, 0.02)


def _sample(run: _Run, second: int) -> None:
    """The backlog at the end of ``second`` (of the clock, from the first due time)."""
    run.backlog.append((second, run.due, run.committed))


async def _tick(run: _Run, fleet: _Fleet, settings: FleetSettings,
                progress: Callable[[dict[str, Any]], None] | None) -> None:
    loop = asyncio.get_running_loop()
    second = 1
    while True:
        await asyncio.sleep(max(0.0, run.t0 + second - loop.time()))
        # A loop stalled past whole seconds samples the second it is in (those it slept
        # through have no sample: no backlog figure, rather than a made-up one).
        second = max(second, int(loop.time() - run.t0))
        _sample(run, second - 1)
        second += 1
        if progress is None:
            continue
        recent = [x for x in run.latency[max(0, run.due - 2000):run.due] if x is not None]
        progress({"elapsed_s": round(loop.time() - run.t0, 1), "duration_s": settings.duration,
                  "journaled": run.journaled, "committed": run.committed,
                  "backlog": run.due - run.committed, "p99_ms": percentiles(recent)["p99"],
                  "connected": sum(u.connected.is_set() for u in fleet.uplinks),
                  "validators": len(fleet.uplinks)})


def report(settings: FleetSettings, run: _Run, stats: Sequence[Any], *, cpu_s: float,
           wall_s: float, journal_dir: Path | None) -> dict[str, Any]:
    """The run's figures: totals, tap-to-commit latency overall and per second of the
    schedule, commits and backlog per second of the clock, the uplinks' errors."""
    offsets = run.fleet.offsets
    done = [x for x in run.latency if x is not None]
    sampled = [s + 1 for s, _, _ in run.backlog]
    # An interrupted run reports the seconds it ran, not the ones it never reached.
    seconds = max([1, *sampled]) if run.interrupted else max([math.ceil(settings.duration),
                                                               *sampled])
    lats: list[list[float]] = [[] for _ in range(seconds)]
    scheduled = [0] * seconds
    for i, offset in enumerate(offsets[:run.due]):
        s = min(int(offset), seconds - 1)
        scheduled[s] += 1
        x = run.latency[i]
        if x is not None:
            lats[s].append(x)
    commits = [0] * seconds
    for at in run.committed_at:
        commits[min(max(0, int(at - run.t0)), seconds - 1)] += 1
    backlog: list[int | None] = [None] * seconds
    for s, due, committed in run.backlog:
        backlog[s] = due - committed
    rows = [{"second": s, "scheduled": scheduled[s], "committed": commits[s],
             "backlog": backlog[s], **percentiles(lats[s])} for s in range(seconds)]
    last = max(run.committed_at, default=run.t0) - run.t0
    errors = sorted({str(st.last_error) for st in stats if st.last_error})
    return {
        "broker": settings.broker.url(), "validators": settings.validators,
        "cards": run.fleet.cards, "arrivals": settings.arrivals,
        "rate_per_s": settings.rate, "duration_s": settings.duration,
        "scheduled": len(offsets), "due": run.due, "journaled": run.journaled,
        "committed": run.committed, "uncommitted": run.due - run.committed,
        "interrupted": run.interrupted,
        "throughput_per_s": round(run.committed / last, 1) if last > 0 else 0.0,
        "latency_ms": percentiles(done),
        "journal_lag_ms": percentiles(run.journal_lag),
        "backlog_max": max((due - c for _, due, c in run.backlog), default=0),
        "drain_s": round(max(0.0, last - settings.duration), 3),
        "per_second": rows,
        "uplink": {"connects": sum(st.connects for st in stats),
                   "disconnects": sum(st.disconnects for st in stats),
                   "published": sum(st.published for st in stats),
                   "resent": sum(st.resent for st in stats), "errors": errors},
        "journal_errors": run.journal_errors[:10],
        "prepare_s": round(run.fleet.prepare_s, 3),
        "generator_cpu_s": round(cpu_s, 3), "generator_wall_s": round(wall_s, 3),
        "journal_dir": None if journal_dir is None else str(journal_dir),
        "journal_fsync": settings.journal_fsync,
    }  # fmt: skip


__all__ = ["ARRIVALS", "FleetLoadError", "FleetSettings", "PrepareCancelledError",
           "PreparedFleet", "percentiles", "prepare", "report", "run_fleet", "schedule"]
