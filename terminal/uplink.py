"""The validator's MQTT link (aiomqtt): taps up from the journal, signed changes down.

Up: every unsent journal row is published on ``tapsim/v1/taps/<validator id>`` with
QoS 1 and marked sent when the broker's PUBACK arrives (aiomqtt's ``publish`` returns
then).  Up to ``window`` publishes are in flight at once.  After any disconnect the
uplink reconnects with backoff and starts again from the oldest unsent row: a tap whose
PUBACK was lost is sent twice, which the back office absorbs by deduplicating on
``tap_id``; a tap is never lost, since it leaves the unsent set only on a PUBACK.

Down: the session is persistent (fixed client id, ``clean_session=False``), so QoS 1
deltas published while the validator was offline wait for it at the broker; the
retained snapshot and fare version arrive on every (re)subscribe.  Each message goes
through :class:`~terminal.denylist.Downlink` (signature, version rules, journal).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

from terminal.denylist import Downlink
from terminal.journal import Journal, JournalError
from wire import CommitAck, WireError, decode, topics
from wire.aio import settle, wait_event
from wire.brokerurl import BrokerUrl

log = logging.getLogger("tapsim.terminal.uplink")

LARGE_PAYLOAD = 64 * 1024  # downlink payloads above this are handled off the event loop
RESEND_MAX = 300.0  # seconds: the longest wait before unconfirmed taps go again


@dataclass(frozen=True)
class BrokerSettings(BrokerUrl):
    """The broker, as this validator connects to it (its own client id)."""

    client_id: str = field(kw_only=True)

    @classmethod
    def from_url(cls, url: str, client_id: str, *, tls_ca: Path | None = None,
                 keepalive: int = 30) -> BrokerSettings:
        """A parsed broker URL (wire.brokerurl: forms, password from $TAPSIM_MQTT_PASSWORD)."""
        return cls(**{**BrokerUrl.parse(url, tls_ca=tls_ca).fields(), "keepalive": keepalive},
                   client_id=client_id)

    def client(self) -> aiomqtt.Client:
        """A persistent-session client (enter it with ``async with``)."""
        context = self.tls_context()
        client = aiomqtt.Client(
            self.host, self.port, identifier=self.client_id, clean_session=False,
            username=self.username, password=self.password, keepalive=self.keepalive,
            timeout=self.timeout, tls_context=context, max_inflight_messages=1000,
            max_queued_outgoing_messages=0,
        )
        client.pending_calls_threshold = 10_000  # we keep a window of publishes on purpose
        return client


def validator_client_id(validator_id: str) -> str:
    """The client id the broker binds to this validator's user (wire.broker)."""
    return topics.validator_client_id(validator_id)


@dataclass
class UplinkStats:
    connects: int = 0
    disconnects: int = 0
    published: int = 0  # PUBACKed
    committed: int = 0  # taps the back office confirmed (end-to-end acknowledgement)
    resent: int = 0  # taps sent again: not confirmed in time, or after a reconnect
    downlink_messages: int = 0
    last_error: str | None = None


class Uplink:
    """Runs until ``stop`` is set; call :meth:`notify` after each journaled tap."""

    def __init__(self, settings: BrokerSettings, journal: Journal, validator_id: str,
                 downlink: Downlink | None = None, *, window: int = 256,
                 backoff: tuple[float, float] = (0.2, 5.0), max_rate: float | None = 1000.0,
                 commit_acks: bool = True, commit_timeout: float = 10.0,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        self.settings = settings
        self.journal = journal
        self.topic = topics.tap_topic(validator_id)
        self.downlink = downlink
        self.window = window
        # Taps/s at most when draining a backlog: the uplink shares the CPU (and the GIL)
        # with the tap path, whose p99 must stay in budget while a long partition drains.
        self.max_rate = max_rate
        self.backoff = backoff
        self.clock = clock
        self.validator_id = validator_id
        # End-to-end acknowledgement (wire/README.md): a tap stays pending until the back
        # office says it is committed; one not confirmed within commit_timeout of its PUBACK
        # is sent again (the wait doubles, up to RESEND_MAX, while nothing is confirmed: a
        # back office that is down is not flooded).
        self.commit_acks = commit_acks
        self.commit_timeout = commit_timeout
        self._resend_after = commit_timeout
        self._rewind = False
        self._confirmed_at_resend = -1
        self.stats = UplinkStats()
        self.connected = asyncio.Event()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def notify(self) -> None:
        """New taps in the journal (safe to call from any thread)."""
        if self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        delay = self.backoff[0]
        while not stop.is_set():
            try:
                async with self.settings.client() as client:
                    self.stats.connects += 1
                    self.connected.set()
                    delay = self.backoff[0]
                    log.info("connected to %s:%d", self.settings.host, self.settings.port)
                    await self._session(client, stop)
            except aiomqtt.MqttError as exc:
                self.stats.last_error = str(exc)
                # A certificate the validator cannot trust is not an outage: say so loudly.
                level = logging.ERROR if "CERTIFICATE_VERIFY_FAILED" in str(exc) \
                    else logging.WARNING
                log.log(level, "broker %s:%d link down: %s", self.settings.host,
                        self.settings.port, exc)
            except (OSError, sqlite3.Error, JournalError) as exc:
                # A local fault (disk, journal): the taps stay journaled; try again shortly.
                self.stats.last_error = str(exc)
                log.error("uplink stopped by a local error, restarting: %s", exc)
            finally:
                if self.connected.is_set():
                    self.stats.disconnects += 1
                self.connected.clear()
            if stop.is_set():
                break
            await wait_event(stop, delay)
            delay = min(delay * 2, self.backoff[1])

    async def _session(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        wanted = [(t, 1) for t in topics.DOWNLINK] if self.downlink is not None else []
        if self.commit_acks:
            wanted.append((topics.commit_topic(self.validator_id), 1))
            # A new connection: whatever was sent and not confirmed goes again.
            self._requeue(self.clock())
        if wanted:
            await client.subscribe(wanted)
        tasks = {asyncio.create_task(self._publisher(client, stop)),
                 asyncio.create_task(stop.wait())}
        if wanted:
            tasks.add(asyncio.create_task(self._receiver(client, self.downlink)))
        if self.commit_acks:
            tasks.add(asyncio.create_task(self._resender(stop)))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await settle(tasks, 1.0)
        for task in done:
            exc = None if task.cancelled() else task.exception()
            if exc is not None:
                raise exc

    async def _publisher(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        cursor = 0  # every connection starts again from the oldest unsent tap
        inflight: dict[asyncio.Task[Any], int] = {}
        loop = asyncio.get_running_loop()
        budget, refilled = float(self.window), loop.time()
        try:
            while not stop.is_set():
                if self._rewind:  # taps went back to unsent: look from the start again
                    self._rewind, cursor = False, 0
                room = self.window - len(inflight)
                if self.max_rate is not None:  # token bucket: a backlog drains at max_rate
                    now = loop.time()
                    budget = min(float(self.window), budget + (now - refilled) * self.max_rate)
                    refilled = now
                    if budget < 1 and not inflight:
                        await asyncio.sleep((1 - budget) / self.max_rate)
                        continue
                    room = min(room, int(budget))
                rows = self.journal.unsent(room, cursor) if room > 0 else []
                if cursor == 0 and inflight:
                    pending = set(inflight.values())
                    rows = [r for r in rows if r[0] not in pending]
                budget -= len(rows)
                for seq, payload in rows:
                    task = asyncio.create_task(client.publish(self.topic, payload, qos=1))
                    inflight[task] = seq
                    cursor = seq
                if not inflight:
                    self._idle.set()
                    self._wake.clear()
                    await wait_event(self._wake, 0.5)
                    continue
                self._idle.clear()
                wake: asyncio.Task[Any] = asyncio.create_task(self._wake.wait())
                waiting: set[asyncio.Task[Any]] = {*inflight, wake}
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                wake.cancel()
                self._wake.clear()
                acked: list[int] = []
                failure: BaseException | None = None
                for task in done:
                    if task is wake:
                        continue
                    seq = inflight.pop(task)
                    if task.exception() is None:
                        acked.append(seq)
                    else:
                        failure = failure or task.exception()
                if acked:
                    self.journal.mark_sent(acked, self.clock())
                    self.stats.published += len(acked)
                if failure is not None:  # the session ends; we reconnect and resend
                    raise failure
        finally:
            for task in inflight:
                task.cancel()
            self._idle.clear()

    def _requeue(self, sent_before: dt.datetime) -> int:
        n = self.journal.requeue_uncommitted(sent_before)
        if n:
            self.stats.resent += n
            self._rewind = True
            self._wake.set()
            log.info("%d tap(s) not confirmed by the back office: sending them again", n)
        return n

    async def _resender(self, stop: asyncio.Event) -> None:
        """Sends again what stays unconfirmed after ``_resend_after`` seconds."""
        while not await wait_event(stop, max(0.05, self.commit_timeout / 4)):
            committed = self.stats.committed
            cutoff = self.clock() - dt.timedelta(seconds=self._resend_after)
            if self._requeue(cutoff):
                # Nothing confirmed since the last round: wait longer before the next.
                if committed == self._confirmed_at_resend:
                    self._resend_after = min(self._resend_after * 2, RESEND_MAX)
                self._confirmed_at_resend = committed

    def _on_commit(self, data: bytes) -> None:
        try:
            ack = decode(data, CommitAck)
        except WireError as exc:
            log.warning("commit acknowledgement refused: %s", exc)
            return
        if ack.validator_id != self.validator_id:
            log.warning("commit acknowledgement for validator %r ignored", ack.validator_id)
            return
        n = self.journal.mark_committed(ack.tap_ids, self.clock())
        self.stats.committed += n
        if n:
            self._resend_after = self.commit_timeout

    async def _receiver(self, client: aiomqtt.Client, downlink: Downlink | None) -> None:
        commits = topics.commit_topic(self.validator_id)
        async for message in client.messages:
            payload = message.payload
            data = bytes(payload) if isinstance(payload, bytes | bytearray) \
                else str(payload or "").encode()
            topic = str(message.topic)
            if topic == commits:
                self._on_commit(data)
                continue
            self.stats.downlink_messages += 1
            if downlink is None:
                continue
            if len(data) > LARGE_PAYLOAD:
                await asyncio.to_thread(downlink.handle, topic, data)
            else:
                downlink.handle(topic, data)

    async def drain(self, timeout: float) -> bool:
        """Wait until the broker has taken every tap (True) or ``timeout`` passes (False)."""
        return await self._wait_until(self.journal.unsent_count, timeout)

    def outstanding(self) -> int:
        """Taps not yet done with: not confirmed by the back office (with end-to-end
        acknowledgements), else not yet PUBACKed by the broker."""
        return self.journal.uncommitted_count() if self.commit_acks \
            else self.journal.unsent_count()

    async def confirm(self, timeout: float) -> bool:
        """Wait until no tap is outstanding (True) or ``timeout`` passes (False): what a
        validator does before it exits.

        With acknowledgements, a tap the broker took but the back office has not confirmed is
        still outstanding: waiting only for the broker let a validator started on a journal of
        sent-but-unconfirmed taps exit "drained" before its uplink had even requeued them
        (seen in tests/test_e2e_faults.py: eight accepted taps never reached the ledger)."""
        return await self._wait_until(self.outstanding, timeout)

    async def _wait_until(self, left: Callable[[], int], timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if left() == 0:
                return True
            self.notify()
            await asyncio.sleep(0.05)
        return left() == 0
