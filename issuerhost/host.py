"""The issuer as an asyncio TCP host: many connections, one issuer, group commit.

Every connection feeds an ``isolink.framing.FrameReader``; each whole message is decoded
with the dialect and queued.  One processor task takes whatever is queued (up to
``batch_max`` messages), answers each with :class:`~issuerhost.handler.IssuerHandler`
against the issuer in memory, writes the issuer's change set in one transaction
(``IssuerStore.save_issuer``), and only then sends the answers: an answer the acquirer
saw is on disk, so after a kill -9 a repeat gets it again.  If the write fails the batch
is not answered (the acquirer times out and repeats or reverses) and the issuer is
reloaded from the database.

Bad input never ends the host: a message that does not decode is answered "30" when its
MTI is a request of the dialect and its STAN could be read, else dropped with a logged
reason; a bad length header (zero, above the limit) ends that connection (the stream has
lost its framing), logged; the other connections go on.

Another process may change the issuer's records while the host runs (``tapsim card
issue``, ``tapsim account activate``): ``save_issuer`` marks the database, and the host
reloads before its next batch when the mark is not its own.  A branch write that lands
between that check and the batch's commit makes the commit conflict (the mark is checked
under the issuer lock both take): nothing is written, and the batch is answered again on a
fresh load, holding the lock from the reload to the commit, before anything is sent.

Retention (``retention``, ``tapsim issuer run --retention``): memory holds what
:mod:`issuer.retention` keeps for a floor, the start of the UTC day ``retention`` behind
the host's clock; every load (start, reload) reads only those records
(``load_issuer_since``), and when the floor moves (once a day) the issuer prunes the rest.
A late message naming a pruned record is answered from the database (issuerhost.handler).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from backoffice.storage.base import IssuerConflictError, Store
from isolink.dialect import Dialect, Fields, MessageFormatError
from isolink.framing import FrameError, FrameReader, frame
from isolink.messages import format_error_answer
from issuer.service import Issuer
from issuer.store import IssuerChanges
from issuerhost.handler import IssuerHandler

READ_CHUNK = 65536
MAX_WRITE_BUFFER = 4 * 1024 * 1024  # bytes queued to a client that does not read: cut it off

Log = Callable[[str], None]
DAY = timedelta(days=1)


def retention_floor(now: datetime, retention: timedelta) -> datetime:
    """The start of the UTC day ``retention`` behind ``now``: the host's prune floor."""
    back = (now - retention).astimezone(UTC)
    return back.replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass
class HostStats:
    connections: int = 0
    answered: Counter[str] = field(default_factory=Counter)  # by response code
    format_errors: int = 0
    dropped: int = 0
    batches: int = 0
    store_failures: int = 0
    redone: int = 0  # batches answered again: a branch changed the issuer under them

    def to_dict(self) -> dict[str, object]:
        return {"connections": self.connections, "answered": dict(sorted(self.answered.items())),
                "format_errors": self.format_errors, "dropped": self.dropped,
                "batches": self.batches, "store_failures": self.store_failures,
                "redone": self.redone}


class _Connection:
    def __init__(self, writer: asyncio.StreamWriter, peer: str) -> None:
        self.writer = writer
        self.peer = peer

    def send(self, data: bytes) -> None:
        if self.writer.is_closing():
            return
        self.writer.write(data)
        if self.writer.transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            self.writer.close()  # it does not read its answers


@dataclass
class _Answered:
    """A batch answered in memory, before its commit."""

    replies: list[tuple[bytes, _Connection]] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)
    format_errors: list[tuple[MessageFormatError, _Connection]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    changes: IssuerChanges = field(default_factory=IssuerChanges)


class IssuerHost:
    """See the module docstring; ``serve`` until ``stop`` is set."""

    def __init__(self, store: Store, load_issuer: Callable[[datetime | None], Issuer],
                 dialect: Dialect, *, log: Log, batch_max: int = 1024,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 retention: timedelta | None = None) -> None:
        """``load_issuer(floor)``: the issuer with the records kept for ``floor`` (None:
        every record; ``retention`` None keeps everything, as before there was one)."""
        self.store = store
        self.dialect = dialect
        self.log = log
        self.batch_max = batch_max
        self.clock = clock
        self.retention = retention
        self.stats = HostStats()
        self._load_issuer = load_issuer
        self._mark = store.issuer_mark()
        self._floor: datetime | None = None
        self.handler = IssuerHandler(self._load(), dialect, clock, recall=store.issuer_request)
        self.handler.floor = self._floor
        self._queue: asyncio.Queue[tuple[Fields, _Connection]] = asyncio.Queue()
        self._writers: set[asyncio.StreamWriter] = set()

    def _load(self) -> Issuer:
        """The issuer for the floor now (what a bounded load reads)."""
        self._floor = None if self.retention is None else \
            retention_floor(self.clock(), self.retention)
        return self._load_issuer(self._floor)

    def _reload(self) -> None:
        self.handler.issuer = self._load()
        self.handler.floor = self._floor

    def _prune_if_due(self) -> None:
        """Once a day (the floor moved): forget what a load for the new floor would not
        read."""
        if self.retention is None or self._floor is None:
            return
        floor = retention_floor(self.clock(), self.retention)
        if floor < self._floor + DAY:
            return
        dropped = self.handler.issuer.prune(floor)
        self._floor = self.handler.floor = floor
        self.log(f"retention: {dropped} record(s) before {floor.isoformat()} dropped from "
                 "memory (kept in the database)")

    async def serve(self, host: str, port: int, stop: asyncio.Event,
                    ready: Callable[[str, int], None] | None = None) -> HostStats:
        server = await asyncio.start_server(self._client, host, port, limit=READ_CHUNK)
        processor = asyncio.create_task(self._process())
        try:
            sock = server.sockets[0].getsockname()
            if ready is not None:
                ready(str(sock[0]), int(sock[1]))
            await stop.wait()
        finally:
            server.close()
            for w in list(self._writers):
                w.close()
            processor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await processor
            with contextlib.suppress(Exception):
                await server.wait_closed()
        return self.stats

    # -- connections ----------------------------------------------------------------------

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        name = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        conn = _Connection(writer, name)
        self._writers.add(writer)
        self.stats.connections += 1
        frames = FrameReader(self.dialect.max_message_bytes)
        try:
            while True:
                data = await reader.read(READ_CHUNK)
                if not data:
                    frames.close()
                    break
                for message in frames.receive_data(data):
                    self._accept(message, conn)
        except FrameError as exc:
            self.stats.dropped += 1
            self.log(f"connection {name} closed: {exc}")
        except (ConnectionError, OSError):
            pass
        except Exception as exc:  # a bug must not stop the host: this connection only
            self.log(f"connection {name} closed: {type(exc).__name__}: {exc}")
        finally:
            self._writers.discard(writer)
            writer.close()

    def _accept(self, message: bytes, conn: _Connection) -> None:
        try:
            fields = self.dialect.decode(message)
            self.dialect.check_required(fields)
        except MessageFormatError as exc:
            self._format_error(exc, conn)
            return
        self._queue.put_nowait((fields, conn))

    def _format_error(self, exc: MessageFormatError, conn: _Connection) -> None:
        reply = format_error_answer(self.dialect, exc)
        if reply is None:
            self.stats.dropped += 1
            self.log(f"dropped a message from {conn.peer}: {exc} (MTI {exc.mti or 'unread'}, "
                     f"STAN {exc.stan or 'unread'})")
            return
        self.stats.format_errors += 1
        self.stats.answered["30"] += 1
        self.log(f"format error from {conn.peer}, MTI {exc.mti} STAN {exc.stan}: {exc}")
        conn.send(frame(self.dialect.encode(reply)))

    # -- the issuer -----------------------------------------------------------------------

    async def _process(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.batch_max and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            self._run(batch)
            await asyncio.sleep(0)  # let the readers queue the next batch

    def _run(self, batch: list[tuple[Fields, _Connection]]) -> None:
        self._reload_if_changed()
        self._prune_if_due()
        try:
            try:
                answered = self._answer(batch)
                if answered.changes:
                    self._mark = self.store.save_issuer(answered.changes, issuer_mark=self._mark)
            except IssuerConflictError:
                self.stats.redone += 1
                self.log("issuer records changed in the database during a batch: reloaded, "
                         "batch answered again")
                with self.store.issuer_held() as held:  # no branch write until the commit
                    self._reload()
                    answered = self._answer(batch)
                    mark = held if not answered.changes else \
                        self.store.save_issuer(answered.changes, issuer_mark=held)
                self._mark = mark
        except Exception as exc:  # any store failure: answer nothing
            self.stats.store_failures += 1
            self.log(f"database write failed, {len(batch)} message(s) not answered "
                     f"(the acquirers will repeat): {exc}")
            self._reload()
            return
        for error, conn in answered.format_errors:
            self._format_error(error, conn)
        for note in answered.dropped:
            self.stats.dropped += 1
            self.log(note)
        self.stats.batches += 1
        self.stats.answered.update(answered.codes)
        for data, conn in answered.replies:
            conn.send(data)

    def _answer(self, batch: list[tuple[Fields, _Connection]]) -> _Answered:
        """Every message of the batch against the issuer in memory; nothing sent or counted
        yet (a batch may be answered twice, see ``_run``)."""
        out = _Answered()
        for fields, conn in batch:
            try:
                reply = self.handler.handle(fields)
                data = frame(self.dialect.encode(reply))
            except MessageFormatError as exc:
                out.format_errors.append((exc, conn))
                continue
            except Exception as exc:  # a bug must not stop the host: this message only
                out.dropped.append(f"dropped MTI {fields.get('t')} STAN {fields.get('11')} "
                                   f"from {conn.peer}: {type(exc).__name__}: {exc}")
                continue
            out.replies.append((data, conn))
            out.codes.append(str(reply["39"]))
        out.changes = self.handler.issuer.drain_changes()
        return out

    def _reload_if_changed(self) -> None:
        mark = self.store.issuer_mark()
        if mark != self._mark:
            self._reload()
            self._mark = mark
            self.log("issuer records changed in the database: reloaded")
