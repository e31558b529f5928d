"""`tapsim backoffice run`: taps from MQTT into the transaction core; deny list back out.

How the work is shared (the core is one writer per database, backoffice/README.md):

* **N tap workers** are N MQTT connections in one MQTT shared subscription
  (``$share/backoffice/tapsim/v1/taps/+``), each a persistent session with its own client
  id (``tapsim-backoffice-1`` ...), so the broker spreads the taps over them and keeps each
  one's share while the back office is down.  A worker only receives: the payload goes,
  with the connection it came on, into one queue.
* **One writer** takes the queue in arrival order, in batches of what has arrived (at most
  ``max_batch``; a batch grows while the previous one commits), decodes and checks each
  payload (:func:`backoffice.consumer.gate.read_tap`), runs the batch through the core on
  the writer's own thread (one transaction), and only then acknowledges every message of
  the batch to the broker (manual PUBACKs, :mod:`backoffice.consumer.link`).  Payloads it
  refuses, and taps the core rejects, go to the dead-letter topic with the reason first.
  Decoding is microseconds; the commit is the cost, which is why one writer with batches
  beats several writers on one database (and several would break the core's memory).
  N > 1 still helps: a connection holds at most the broker's in-flight window of
  unacknowledged messages (mosquitto ``max_inflight_messages``), so N connections let a
  batch grow N times larger while a commit is under way.
* **One publisher** connection sends dead letters and the downlink: on every (re)connect the
  fare table version and the deny-list snapshot (both retained, signed), after each change
  a delta (QoS 1) at once and a fresh snapshot at most every ``snapshot_every`` seconds, so
  validators that subscribe for the first time or whose queued deltas overflowed converge.
* **A ticker** runs the core's day-end closes (``close_due``) and scheduled debt recovery
  (``run_recovery``) every ``tick`` seconds on the writer's thread, each its own
  transaction: an aggregate closes, and a due retry runs, within one tick of its time.

A storage failure (database restarted, disk full) keeps the batch: nothing is acknowledged,
the store is reopened with backoff and the same batch is tried again; the ids the core
derives from tap ids make that safe.  A batch the core fails on for another reason is tried
tap by tap, and a tap that fails alone is dead-lettered (``core-error``) rather than
blocking the queue forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiomqtt

from backoffice.consumer.downlink import DeltaMessage, DownlinkBook
from backoffice.consumer.gate import (
    EpurseTap,
    FareMediaLabels,
    Refused,
    Skipped,
    dead_letter,
    epurse_row,
    read_tap,
)
from backoffice.consumer.link import (
    CLIENT_PREFIX,
    BrokerAddress,
    Link,
    manual_acks,
    publisher_id,
    worker_id,
)
from backoffice.outcomes import BatchResult
from backoffice.service import TransactionCore
from backoffice.storage.base import StorageError
from backoffice.taps import TapRecord
from fare.clock import epoch_us
from wire import topics
from wire.aio import bounded, settle, wait_event
from wire.codec import encode
from wire.errors import WireError
from wire.messages import MAX_ACK_IDS, CommitAck, DenyListSnapshot, FareTableVersion
from wire.signing import Signer, Verifier

log = logging.getLogger("tapsim.backoffice.consumer")

T = TypeVar("T")
Clock = Callable[[], dt.datetime]
SESSIONS_KEY = "backoffice.consumer.sessions"  # how many worker sessions the broker may hold
DENY_KINDS = ("deny_add", "deny_remove")
# A stop (SIGTERM/SIGINT) ends within 2 s: a second to commit and acknowledge what was
# taken, half a second for the connections to close; anything later comes again next start.
STOP_DRAIN = 1.0
STOP_DISCONNECT = 0.4
RETAINED_WAIT = 0.5  # seconds for the broker's retained snapshot after subscribing


@dataclass(frozen=True)
class ConsumerConfig:
    workers: int = 2
    max_batch: int = 500
    tick: float = 60.0  # seconds between day-end closes / scheduled recovery runs
    snapshot_every: float = 5.0  # at most one retained snapshot per this many seconds
    backoff: tuple[float, float] = (0.2, 5.0)
    retire_idle: float = 1.0  # a retiring session is done after this long without a message
    # End-to-end acknowledgement (wire/README.md): tell each validator which of its taps
    # are committed, so it stops resending them.  Off only to measure what it costs.
    commit_acks: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.workers <= 64:
            raise ValueError("workers must be 1-64")
        if self.max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if self.tick <= 0 or self.snapshot_every < 0:
            raise ValueError("tick must be positive, snapshot_every not negative")


@dataclass
class ConsumerStats:
    """What the consumer did (no card data: counts and latencies only)."""

    received: int = 0
    batches: int = 0
    ingested: int = 0  # accepted by the core (first time)
    duplicates: int = 0  # a tap id the core already had (a resend, a replay)
    commit_acks: int = 0  # CommitAck messages published (each names many taps)
    commit_acked_taps: int = 0
    rejected: int = 0  # refused by the core (kept in its rejects table too)
    epurse_kept: int = 0  # accepted e-purse taps kept for clearing (first time)
    skipped: Counter[str] = field(default_factory=Counter)  # not charged: refused at the
    # validator (deny_listed, duplicate, declined)
    dead_letters: Counter[str] = field(default_factory=Counter)  # by reason
    acked: int = 0
    not_acked: int = 0  # the connection was gone: the broker sends them again
    storage_retries: int = 0
    redone: int = 0  # batches and ticks done again: a branch changed the issuer under them
    ticks: int = 0
    deny_version: int = 0
    deltas: int = 0
    snapshots: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=200_000))
    # ... of which in the back office: from the message's arrival to the commit
    inside_ms: deque[float] = field(default_factory=lambda: deque(maxlen=200_000))

    def to_dict(self) -> dict[str, Any]:
        def summary(values: deque[float]) -> dict[str, Any]:
            lat = sorted(values)

            def pct(p: float) -> float | None:
                return round(lat[min(len(lat) - 1, int(p * len(lat)))], 3) if lat else None

            return {"n": len(lat), "p50": pct(0.50), "p99": pct(0.99),
                    "max": round(lat[-1], 3) if lat else None}

        return {
            "received": self.received, "batches": self.batches, "ingested": self.ingested,
            "duplicates": self.duplicates, "rejected": self.rejected,
            "epurse_kept": self.epurse_kept,
            "commit_acks": self.commit_acks, "commit_acked_taps": self.commit_acked_taps,
            "skipped": dict(self.skipped), "dead_letters": dict(self.dead_letters),
            "acked": self.acked, "not_acked": self.not_acked,
            "storage_retries": self.storage_retries, "redone": self.redone,
            "ticks": self.ticks,
            "deny_version": self.deny_version, "deltas": self.deltas,
            "snapshots": self.snapshots,
            "tap_to_ledger_ms": summary(self.latencies_ms),
            "arrival_to_ledger_ms": summary(self.inside_ms),
        }


class _Fatal(Exception):  # noqa: N818 - internal: the database can no longer be opened
    pass


@dataclass(frozen=True, slots=True)
class _Item:
    link: Link
    topic: str
    payload: bytes
    mid: int
    qos: int
    arrived: float  # time.monotonic()


class Consumer:
    """Runs until ``stop`` is set (see the module docstring)."""

    def __init__(self, broker: BrokerAddress, open_core: Callable[[], TransactionCore],
                 media: FareMediaLabels, tz: dt.tzinfo, *, signer: Signer | None = None,
                 fare: Callable[[TransactionCore], FareTableVersion] | None = None,
                 config: ConsumerConfig | None = None,
                 clock: Clock = lambda: dt.datetime.now(dt.UTC)) -> None:
        self.broker = broker
        self.open_core = open_core
        self.media = media
        self.tz = tz
        self.signer = signer
        self.fare = fare
        self.config = config or ConsumerConfig()
        self.clock = clock
        self.stats = ConsumerStats()
        self.ready = asyncio.Event()  # workers and publisher connected once
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="backoffice-writer")
        self._core: TransactionCore | None = None
        self._opened = False
        self._book: DownlinkBook | None = None
        self._fare_msg: bytes | None = None
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._halt = asyncio.Event()  # set: workers stop taking messages
        self._drained = asyncio.Event()  # set: the writer acknowledged all it took
        self._deny_changed = asyncio.Event()
        self._pub: aiomqtt.Client | None = None
        self._pub_up = asyncio.Event()
        self._connected: set[str] = set()
        self._done: dict[str, list[str]] = {}  # validator -> tap ids to acknowledge end to end
        self._done_wake = asyncio.Event()
        self._pub_lost = asyncio.Event()  # a publish found the publisher's link gone
        self._floor_checked = False

    # -- the writer's thread ------------------------------------------------------------

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _open(self) -> TransactionCore:
        if self._core is None:
            try:
                core = self.open_core()
            except StorageError:
                raise
            except Exception as exc:
                if not self._opened:
                    raise  # at start: the caller says what is wrong
                raise _Fatal(str(exc)) from exc  # a database that opened before: stop
            self._core, self._opened = core, True
            if self.signer is not None:
                self._book = DownlinkBook(core.store, self.signer, self.clock)
                self.stats.deny_version = self._book.version
                if self.fare is not None:
                    self._fare_msg = self.signer.sign(self.fare(core))
        return self._core

    def _drop(self) -> None:
        core, self._core, self._book = self._core, None, None
        if core is not None:
            with contextlib.suppress(Exception):
                core.store.close()

    def _ingest(self, taps: list[TapRecord], now: dt.datetime) -> BatchResult:
        core = self._open()
        before = core.redone
        try:
            if core.refresh():  # a card issued or changed by another process
                log.info("issuer records changed in the database: reloaded")
            return core.ingest(taps, now)
        except StorageError:
            self._drop()
            raise
        finally:
            self._redone(core, before)

    def _redone(self, core: TransactionCore, before: int) -> None:
        if core.redone > before:  # a branch write came between the core's load and commit
            self.stats.redone += core.redone - before
            log.info("issuer records changed by a branch during a batch: reloaded, redone")

    def _keep_epurse(self, taps: list[EpurseTap], now: dt.datetime) -> int:
        """Keep accepted e-purse taps for clearing (a resent tap id is kept once)."""
        core = self._open()
        try:
            return core.store.add_epurse([epurse_row(t.record, epoch_us(now)) for t in taps])
        except StorageError:
            self._drop()
            raise

    def _tick(self, now: dt.datetime) -> list[BatchResult]:
        core = self._open()
        before = core.redone
        try:
            return [core.close_due(now), core.run_recovery(now)]
        except StorageError:
            self._drop()
            raise
        finally:
            self._redone(core, before)

    def _sessions(self, workers: int) -> int:
        """Worker sessions the broker may hold from earlier runs (recorded, then raised)."""
        core = self._open()
        before = int(core.store.meta(SESSIONS_KEY) or 0)
        if workers > before:
            core.store.set_meta(SESSIONS_KEY, str(workers))
        return before

    def _set_sessions(self, n: int) -> None:
        self._open().store.set_meta(SESSIONS_KEY, str(n))

    def _changes(self) -> DeltaMessage | None:
        self._open()
        return self._book.changes() if self._book else None

    def _raise_floor(self, held: int) -> bool:
        self._open()
        if self._book is None or not self._book.raise_floor(held):
            return False
        self.stats.deny_version = self._book.version
        return True

    def _snapshot(self) -> tuple[DeltaMessage | None, int, bytes] | None:
        self._open()
        if self._book is None:
            return None
        delta = self._book.changes()  # events since the last delta go out first
        version, payload = self._book.snapshot()
        return delta, version, payload

    # -- running ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> ConsumerStats:
        """Consume until ``stop``; then commit and acknowledge what was taken, and return."""
        try:
            await self._db(self._open)  # a database that cannot be opened is fatal here
            before = await self._db(self._sessions, self.config.workers)
            workers = [asyncio.create_task(self._worker(n))
                       for n in range(1, self.config.workers + 1)]
            retiring = [asyncio.create_task(self._retire(n))
                        for n in range(self.config.workers + 1, before + 1)]
            writer = asyncio.create_task(self._writer())
            helpers = [asyncio.create_task(self._publisher()),
                       asyncio.create_task(self._acker()),
                       asyncio.create_task(self._ticker()),
                       asyncio.create_task(self._watch_ready())]
            if retiring:
                helpers.append(asyncio.create_task(self._after_retiring(retiring)))
            stopped = asyncio.create_task(stop.wait())
            await asyncio.wait({stopped, writer}, return_when=asyncio.FIRST_COMPLETED)
            self._halt.set()  # workers stop taking messages, keep their connections
            if not writer.done():
                await asyncio.sleep(0)
                # Every message taken is committed and acknowledged (or the writer failed),
                # as far as that goes in STOP_DRAIN: what is left unacknowledged comes again
                # on the next start, and the core's dedupe absorbs it.
                join = asyncio.create_task(self._queue.join())
                await asyncio.wait({join, writer}, timeout=STOP_DRAIN,
                                   return_when=asyncio.FIRST_COMPLETED)
                join.cancel()
            self._drained.set()
            await asyncio.wait({*workers, *retiring}, timeout=STOP_DISCONNECT)
            writer_failed = writer.done() and not writer.cancelled() \
                and writer.exception() is not None
            await settle([*workers, *retiring, *helpers, stopped, writer], STOP_DISCONNECT)
            if writer_failed:
                raise writer.exception()  # type: ignore[misc]
        finally:
            await self._db(self._drop)
            self._executor.shutdown(wait=True)
        return self.stats

    async def _watch_ready(self) -> None:
        want = {worker_id(n) for n in range(1, self.config.workers + 1)} | {publisher_id()}
        while not want <= self._connected:
            await asyncio.sleep(0.02)
        self.ready.set()

    async def _backoff(self, delay: float) -> float:
        await asyncio.sleep(delay)
        return min(delay * 2, self.config.backoff[1])

    async def _worker(self, n: int) -> None:
        """Tap worker ``n``: one persistent session in the shared subscription."""
        ident = worker_id(n)
        delay = self.config.backoff[0]
        while not self._halt.is_set():
            link: Link | None = None
            try:
                client = manual_acks(self.broker.client(ident, clean_session=False))
                async with client:
                    link = Link(client)
                    await client.subscribe(topics.SHARED_TAPS, qos=1)
                    self._connected.add(ident)
                    delay = self.config.backoff[0]
                    log.info("%s consuming %s", ident, topics.SHARED_TAPS)
                    await self._read(client, link)
                    await self._drained.wait()  # stopping: let the writer ack what it took
                    return
            except aiomqtt.MqttError as exc:
                log.warning("%s: broker link down: %s", ident, exc)
            finally:
                if link is not None:
                    link.up = False
                self._connected.discard(ident)
            if not self._halt.is_set():
                delay = await self._backoff(delay)

    async def _read(self, client: aiomqtt.Client, link: Link, idle: float | None = None) -> None:
        """Messages into the queue until the workers are told to stop (or ``idle`` passes)."""
        stopping = asyncio.create_task(self._halt.wait())
        try:
            while True:
                nxt = asyncio.ensure_future(client.messages.__anext__())
                done, _ = await asyncio.wait({nxt, stopping}, timeout=idle,
                                             return_when=asyncio.FIRST_COMPLETED)
                if nxt not in done:
                    nxt.cancel()
                    with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                        await nxt
                    return
                m = nxt.result()
                if m.retain:
                    # A retained copy of a tap (a validator set the flag; the broker cannot
                    # forbid it): the live publication was delivered without the flag and
                    # handled then; this copy would come again to every new subscription.
                    self.stats.skipped["retained"] += 1
                    log.warning("retained message on %s ignored (taps are never retained)",
                                m.topic.value)
                    link.ack(m.mid, m.qos)
                    continue
                payload = m.payload if isinstance(m.payload, bytes) else \
                    bytes(m.payload) if isinstance(m.payload, bytearray) else \
                    str(m.payload or "").encode()
                self.stats.received += 1
                self._queue.put_nowait(_Item(link, m.topic.value, payload, m.mid, m.qos,
                                             time.monotonic()))
        finally:
            stopping.cancel()

    async def _retire(self, n: int) -> None:
        """A session of an earlier run with more workers: take what it holds, then end it."""
        ident = worker_id(n)
        delay = self.config.backoff[0]
        while not self._halt.is_set():
            link: Link | None = None
            try:
                client = manual_acks(self.broker.client(ident, clean_session=False))
                async with client:
                    link = Link(client)
                    await client.unsubscribe(topics.SHARED_TAPS)  # nothing new comes to it
                    await self._read(client, link, idle=self.config.retire_idle)
                    await self._queue.join()
                async with self.broker.client(ident, clean_session=True):
                    pass  # a clean connect deletes the session at the broker
                log.info("%s retired", ident)
                return
            except aiomqtt.MqttError as exc:
                log.warning("%s: broker link down while retiring: %s", ident, exc)
            finally:
                if link is not None:
                    link.up = False
            if not self._halt.is_set():
                delay = await self._backoff(delay)

    async def _after_retiring(self, retiring: list[asyncio.Task[None]]) -> None:
        await asyncio.gather(*retiring, return_exceptions=True)
        if not self._halt.is_set() and all(not t.cancelled() and t.exception() is None
                                          for t in retiring):
            with contextlib.suppress(StorageError):
                await self._db(self._set_sessions, self.config.workers)

    # -- the writer ---------------------------------------------------------------------

    async def _writer(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.config.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._process(batch)
            except _Fatal:
                raise
            except Exception:  # a bug must not stop the service: the batch stays unacked
                log.exception("batch of %d not processed (left unacknowledged)", len(batch))
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _process(self, batch: list[_Item]) -> None:
        self.stats.batches += 1
        refused: list[tuple[_Item, Refused]] = []
        taps: list[TapRecord] = []
        epurse: list[tuple[_Item, EpurseTap]] = []
        items_of: dict[str, list[_Item]] = {}
        tap_of: dict[int, str] = {}  # id(item) -> its tap id, when it has one
        for item in batch:
            inbound = read_tap(item.topic, item.payload, self.media, self.tz)
            if inbound.tap_id is not None:
                tap_of[id(item)] = inbound.tap_id
            if isinstance(inbound, TapRecord):
                taps.append(inbound)
                items_of.setdefault(inbound.tap_id, []).append(item)
            elif isinstance(inbound, Skipped):
                self.stats.skipped[inbound.why] += 1
            elif isinstance(inbound, EpurseTap):
                epurse.append((item, inbound))
            else:
                refused.append((item, inbound))
        arrived = {id(i): i.arrived for i in batch}
        if taps:
            # Shared-subscription workers and resends after a reconnect deliver taps out of
            # order; the fare engine prices a card's taps in time order, so the batch goes in
            # that order (a tap later than one already committed is the core's late tap).
            taps.sort(key=lambda t: (t.time, t.tap_id))
            done = await self._commit(taps)
            now = time.monotonic()
            for tap, outcome in done:
                if outcome is not None:
                    refused += [(i, outcome) for i in items_of.get(tap.tap_id, [])[:1]]
                else:
                    self.stats.inside_ms.extend(
                        (now - arrived[id(i)]) * 1e3 for i in items_of.get(tap.tap_id, [])[:1])
        failed: set[int] = set()
        if epurse:
            try:
                kept = await self._db(self._keep_epurse, [e for _, e in epurse], self.clock())
                self.stats.epurse_kept += kept
                self.stats.duplicates += len(epurse) - kept
            except StorageError as exc:  # left unacknowledged: the broker redelivers them
                log.error("database unavailable, %d e-purse taps left unacknowledged: %s",
                          len(epurse), exc)
                failed.update(id(item) for item, _ in epurse)
        for item, why in refused:
            if not await self._dead_letter(item, why):
                failed.add(id(item))
        for item in batch:  # in arrival order, as MQTT wants its acknowledgements
            if id(item) in failed:
                self.stats.not_acked += 1
                continue
            if item.link.ack(item.mid, item.qos):
                self.stats.acked += 1
            else:
                self.stats.not_acked += 1
            # Committed (or refused for good): the validator may forget it, whether or not
            # the broker got its PUBACK (a redelivery is deduplicated and acknowledged again).
            tap_id = tap_of.get(id(item))
            if tap_id is not None and self.config.commit_acks:
                with contextlib.suppress(WireError):
                    self._done.setdefault(topics.validator_of(item.topic), []).append(tap_id)
        if self._done:
            self._done_wake.set()

    async def _commit(self, taps: list[TapRecord]) -> list[tuple[TapRecord, Refused | None]]:
        """Ingest ``taps`` in one transaction (retrying storage failures); the taps the core
        rejected or failed on, with why."""
        delay = self.config.backoff[0]
        while True:
            try:
                result = await self._db(self._ingest, taps, self.clock())
                break
            except _Fatal:
                raise
            except StorageError as exc:
                self.stats.storage_retries += 1
                log.error("database unavailable, batch of %d kept for a retry: %s",
                          len(taps), exc)
                delay = await self._backoff(delay)
            except Exception as exc:
                if len(taps) == 1:
                    log.exception("the core failed on tap %s", taps[0].tap_id)
                    return [(taps[0], Refused("core-error", f"{type(exc).__name__}: {exc}",
                                              taps[0].tap_id))]
                log.warning("the core failed on a batch of %d (%s): tap by tap", len(taps), exc)
                out: list[tuple[TapRecord, Refused | None]] = []
                for tap in taps:
                    out += await self._commit([tap])
                return out
        committed = self.clock()
        self.stats.ingested += result.accepted
        self.stats.duplicates += result.duplicates
        self.stats.rejected += result.rejected
        rejected = {e.ref: e.detail for e in result.of_kind("rejected")}
        for tap in taps:
            if tap.tap_id not in rejected:
                ms = (committed - tap.time).total_seconds() * 1e3
                self.stats.latencies_ms.append(ms)
        if any(e.kind in DENY_KINDS for e in result.events):
            self._deny_changed.set()
        return [(t, Refused("rejected", rejected[t.tap_id], t.tap_id)
                 if t.tap_id in rejected else None) for t in taps]

    async def _dead_letter(self, item: _Item, why: Refused) -> bool:
        self.stats.dead_letters[why.reason] += 1
        log.warning("dead letter (%s) from %s: %s", why.reason, item.topic, why.detail)
        await wait_event(self._pub_up, self.broker.timeout)  # at start it may still connect
        pub = self._pub
        if pub is None:
            log.warning("no publisher connection: the message stays unacknowledged")
            return False
        try:
            await bounded(pub.publish(
                topics.DEAD_LETTER, dead_letter(item.topic, item.payload, why, self.clock()),
                qos=1), self.broker.timeout)
        except (aiomqtt.MqttError, TimeoutError) as exc:
            log.warning("dead letter not published (%s): the message stays unacknowledged", exc)
            self._lost_publisher()
            return False
        return True

    # -- end-to-end acknowledgements ------------------------------------------------------

    async def _acker(self) -> None:
        """Publishes what the writer finished, one CommitAck per validator and round; an
        acknowledgement that cannot go out is dropped (the validator resends, the core
        dedupes, and the next round acknowledges it)."""
        while True:
            await wait_event(self._done_wake, None)
            self._done_wake.clear()
            done, self._done = self._done, {}
            pub = self._pub
            if pub is None:
                await wait_event(self._pub_up, self.broker.timeout)
                pub = self._pub
            if pub is None:
                continue
            now = self.clock()
            sends = []
            for vid, ids in done.items():
                for i in range(0, len(ids), MAX_ACK_IDS):
                    chunk = ids[i:i + MAX_ACK_IDS]
                    msg = encode(CommitAck(validator_id=vid, issued_at=now, tap_ids=chunk))
                    sends.append(self._send_ack(pub, vid, msg, len(chunk)))
            await asyncio.gather(*sends)

    async def _send_ack(self, pub: aiomqtt.Client, vid: str, msg: bytes, n: int) -> None:
        try:
            await bounded(pub.publish(topics.commit_topic(vid), msg, qos=1), self.broker.timeout)
        except (aiomqtt.MqttError, TimeoutError) as exc:
            log.info("commit acknowledgement to %s not published (%s): it resends", vid, exc)
            self._lost_publisher()
            return
        self.stats.commit_acks += 1
        self.stats.commit_acked_taps += n

    # -- downlink and timers --------------------------------------------------------------

    async def _publisher(self) -> None:
        delay = self.config.backoff[0]
        while True:
            try:
                async with self.broker.client(publisher_id(), clean_session=True) as client:
                    self._pub_lost.clear()
                    self._pub = client
                    self._pub_up.set()
                    self._connected.add(publisher_id())
                    delay = self.config.backoff[0]
                    await self._downlink(client)
            except aiomqtt.MqttError as exc:
                log.warning("publisher: broker link down: %s", exc)
            except StorageError as exc:
                log.error("publisher: database unavailable: %s", exc)
            finally:
                self._pub = None
                self._pub_up.clear()
                self._connected.discard(publisher_id())
            delay = await self._backoff(delay)

    def _lost_publisher(self) -> None:
        """The publisher's connection failed a publish: reconnect it (it may be idle in
        ``_downlink``, where nothing else would notice a broker that went away)."""
        self._pub_lost.set()
        self._deny_changed.set()

    async def _downlink(self, client: aiomqtt.Client) -> None:
        if self.signer is None:  # dead letters and commit acknowledgements only
            await wait_event(self._pub_lost, None)
            raise aiomqtt.MqttError("publisher: a publish found the link down")
        loop = asyncio.get_running_loop()
        if not self._floor_checked:
            held = await self._retained_version()
            self._floor_checked = True
            if held is not None and await self._db(self._raise_floor, held):
                log.warning("the broker's deny list is at version %d, ahead of this database "
                            "(restored from a backup?): continuing at %d", held,
                            self.stats.deny_version)
        if self._fare_msg is not None:
            await client.publish(topics.FARE_VERSION, self._fare_msg, qos=1, retain=True)
        last_snapshot = -1e9
        dirty = True  # every (re)connect publishes the snapshot
        while True:
            if dirty and loop.time() - last_snapshot >= self.config.snapshot_every:
                snap = await self._db(self._snapshot)
                if snap is not None:
                    delta, version, payload = snap
                    if delta is not None:
                        await self._publish_delta(client, delta)
                    await client.publish(topics.DENY_SNAPSHOT, payload, qos=1, retain=True)
                    self.stats.snapshots += 1
                    self.stats.deny_version = version
                    log.info("deny list snapshot %d published", version)
                last_snapshot, dirty = loop.time(), False
            wait = None if not dirty else \
                max(0.0, last_snapshot + self.config.snapshot_every - loop.time())
            await wait_event(self._deny_changed, wait)
            if self._pub_lost.is_set():
                raise aiomqtt.MqttError("publisher: a publish found the link down")
            if self._deny_changed.is_set():
                self._deny_changed.clear()
                delta = await self._db(self._changes)
                if delta is not None:
                    await self._publish_delta(client, delta)
                    dirty = True

    async def _retained_version(self) -> int | None:
        """The version of the deny-list snapshot the broker retains (signed by us), if any."""
        assert self.signer is not None
        verifier = Verifier(self.signer.public_key())
        try:
            async with self.broker.client(f"{CLIENT_PREFIX}-probe", clean_session=True) as c:
                await c.subscribe(topics.DENY_SNAPSHOT, qos=1)
                message = await bounded(anext(aiter(c.messages)), RETAINED_WAIT)
        except (aiomqtt.MqttError, TimeoutError):
            return None  # nothing retained (or no answer): nothing to be ahead of
        payload = message.payload if isinstance(message.payload, bytes) else b""
        try:
            return verifier.open(payload, DenyListSnapshot).version
        except WireError as exc:
            log.warning("retained deny-list snapshot not ours (%s): ignored", exc)
            return None

    async def _publish_delta(self, client: aiomqtt.Client, delta: DeltaMessage) -> None:
        await client.publish(topics.DENY_DELTA, delta.payload, qos=1)
        self.stats.deltas += 1
        self.stats.deny_version = delta.to_version
        log.info("deny list delta %d->%d published", delta.from_version, delta.to_version)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.config.tick)
            t0 = time.perf_counter()
            try:
                results = await self._db(self._tick, self.clock())
            except StorageError as exc:
                log.error("day-end close / recovery postponed: %s", exc)
                continue
            self.stats.ticks += 1
            if any(e.kind in DENY_KINDS for r in results for e in r.events):
                self._deny_changed.set()
            log.debug("tick in %.1f ms", (time.perf_counter() - t0) * 1e3)


__all__ = ["Consumer", "ConsumerConfig", "ConsumerStats"]
