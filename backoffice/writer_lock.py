"""Locks a long-running process holds on its database, so a second one refuses to start.

* :class:`WriterLock`, one back office per database.  The transaction core keeps every card's
  working state in memory and trusts that nobody else writes its tables (backoffice/README.md,
  "Storage and restarts"): a second ``tapsim backoffice run`` or ``backoffice replay`` on the
  same database would decide from stale memory and could charge a card twice.
* :class:`IssuerLock`, one in-memory holder of the bank's records per database: the back
  office with its in-process issuer (``run``/``replay`` without ``--issuer iso8583://``) and
  ``tapsim issuer run`` both keep the issuer's accounts and cards in memory and write whole rows
  back, and their own commits do not move the ``issuer.changed`` mark the other one checks
  (backoffice/README.md, "Branch work while the core runs"): both at once would lose updates.
  A back office reaching the bank over the wire holds no such records and does not take it.

SQLite: an exclusive ``flock`` on a file beside the database (``<database>.writer.lock``,
``<database>.issuer.lock``), released by the kernel when the process dies, even by SIGKILL;
the holder writes who it is into the file (command, pid, host, start, address).  PostgreSQL:
a session-level advisory lock keyed by database and schema (a different key per lock), on a
connection of its own whose ``application_name`` names the holder (released when that
connection ends); a refused process finds the holder in ``pg_locks``/``pg_stat_activity``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

from backoffice.storage.base import StorageError, StorageUnavailableError, redact
from backoffice.storage.urls import is_sqlite, parse_sqlite_url

BACKOFFICE_RUN = "tapsim backoffice run"
BACKOFFICE_REPLAY = "tapsim backoffice replay"
ISSUER_RUN = "tapsim issuer run"
_APP_NAME_MAX = 63  # PostgreSQL keeps the first NAMEDATALEN - 1 bytes of application_name


class WriterLockError(StorageError):
    """Another process already holds this lock of the database (or it cannot be taken)."""


class IssuerLockError(WriterLockError):
    """Another process already holds the bank's records of this database in memory."""


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a lock, as far as it can be found out (any field may be unknown)."""

    command: str = ""
    pid: int | None = None
    host: str = ""
    since: str = ""  # UTC, seconds
    listen: str = ""  # HOST:PORT of a `tapsim issuer run`, once it listens

    def text(self) -> str:
        """``tapsim issuer run`` (pid 12, host h, since ..., listening on ...), for a message."""
        parts = [f"pid {self.pid}" if self.pid is not None else "",
                 f"on {self.host}" if self.host else "",
                 f"since {self.since}" if self.since else "",
                 f"listening on {self.listen}" if self.listen else ""]
        detail = ", ".join(p for p in parts if p)
        who = f"`{self.command}`" if self.command else "another process"
        return f"{who} ({detail})" if detail else who

    def app_name(self) -> str:
        """The PostgreSQL ``application_name`` of the lock's connection: pid, command and
        address, read back by :func:`_pg_holder`."""
        name = f"{self.pid} {self.command}" + (f" | {self.listen}" if self.listen else "")
        return name.encode()[:_APP_NAME_MAX].decode(errors="ignore")


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _from_app_name(name: str, since: str, client: str) -> Holder:
    pid, _, rest = name.partition(" ")
    command, _, listen = rest.partition(" | ")
    if not pid.isdigit():  # not one of ours: say what PostgreSQL says
        return Holder(command=name, since=since, host=client)
    return Holder(command, int(pid), client, since, listen)


class _DatabaseLock:
    """Held from :meth:`acquire` to :meth:`release` (or the process's end)."""

    suffix = ".lock"  # the SQLite lock file: <database><suffix>
    label = "tapsim.lock"  # the PostgreSQL advisory lock's key is derived from it

    def __init__(self, url: str, command: str = BACKOFFICE_RUN) -> None:
        self.url = url
        self.holder = Holder(command, os.getpid(), socket.gethostname(), _now())
        self._fd: int | None = None
        self._conn: Any = None

    def _refusal(self, other: Holder) -> str:
        """The one-line message refusing this process while ``other`` holds the lock."""
        raise NotImplementedError

    def _error(self, other: Holder) -> WriterLockError:
        return WriterLockError(self._refusal(other))

    def acquire(self) -> Self:
        if is_sqlite(self.url):
            self._sqlite()
        else:
            self._postgres()
        return self

    def note(self, *, listen: str) -> None:
        """Add the holder's address (known once it listens) to what a refused process reads."""
        self.holder = Holder(self.holder.command, self.holder.pid, self.holder.host,
                             self.holder.since, listen)
        if self._fd is not None:
            self._write_holder(self._fd)
        if self._conn is not None:
            with contextlib.suppress(Exception):  # only a message would be poorer
                self._conn.execute("SELECT set_config('application_name', %s, false)",
                                   (self.holder.app_name(),))

    # -- SQLite ---------------------------------------------------------------------------

    def _sqlite(self) -> None:
        parsed = parse_sqlite_url(self.url)
        if parsed.in_memory:
            return  # a private in-memory database has no other process
        lock = Path(parsed.path + self.suffix)
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise WriterLockError(f"sqlite: cannot open the lock file {lock}: "
                                  f"{exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            other = _file_holder(fd)
            os.close(fd)
            raise self._error(other) from None
        self._fd = fd
        self._write_holder(fd)

    def _write_holder(self, fd: int) -> None:
        h = self.holder
        data = json.dumps({"command": h.command, "pid": h.pid, "host": h.host,
                           "since": h.since, "listen": h.listen}).encode() + b"\n"
        with contextlib.suppress(OSError):  # only a message would be poorer
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)

    # -- PostgreSQL -----------------------------------------------------------------------

    def _postgres(self) -> None:
        import psycopg  # noqa: PLC0415 - only PostgreSQL needs it

        from backoffice.storage.postgres import split_schema  # noqa: PLC0415

        conninfo, schema = split_schema(self.url)
        key = int.from_bytes(hashlib.sha256(
            f"{self.label}:{urlsplit(conninfo).path}:{schema}".encode()).digest()[:8],
            "big", signed=True)
        try:
            conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=5,
                                   application_name=self.holder.app_name())
        except psycopg.Error as exc:
            raise StorageUnavailableError(f"postgresql: cannot connect to {redact(self.url)} "
                                          f"for the lock: {type(exc).__name__}") from None
        try:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
            if not row or not row[0]:
                raise self._error(_pg_holder(conn, key))
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)  # nobody holds it now
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def _file_holder(fd: int) -> Holder:
    """What the holder of a lock file wrote into it (nothing known if unreadable)."""
    try:
        raw = json.loads(os.pread(fd, 4096, 0) or b"{}")
        pid = raw.get("pid")
        return Holder(str(raw.get("command", "")), pid if isinstance(pid, int) else None,
                      str(raw.get("host", "")), str(raw.get("since", "")),
                      str(raw.get("listen", "")))
    except (OSError, ValueError, AttributeError):
        return Holder()


def _pg_holder(conn: Any, key: int) -> Holder:
    """The session holding advisory lock ``key`` in this database, from ``pg_locks``."""
    import psycopg  # noqa: PLC0415

    unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
    try:
        row = conn.execute(
            "SELECT a.application_name, to_char(a.backend_start AT TIME ZONE 'UTC', "
            "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), host(a.client_addr) "
            "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
            "AND l.classid::bigint = %s AND l.objid::bigint = %s "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            (unsigned >> 32, unsigned & 0xFFFF_FFFF)).fetchone()
    except psycopg.Error:
        return Holder()
    if row is None:  # ended meanwhile, or not visible to this role
        return Holder()
    return _from_app_name(row[0] or "", row[1] or "", row[2] or "")


class WriterLock(_DatabaseLock):
    """One back office (``tapsim backoffice run``/``replay``) per database."""

    suffix = ".writer.lock"
    label = "tapsim.backoffice.writer"

    def _refusal(self, other: Holder) -> str:
        return (f"another back office is writing {redact(self.url)}: {other.text()} holds "
                f"its writer lock; one back office per database, stop it first")


class IssuerLock(_DatabaseLock):
    """One process per database holding the bank's records in memory (see the module
    docstring): a back office with its in-process issuer, or ``tapsim issuer run``."""

    suffix = ".issuer.lock"
    label = "tapsim.issuer.writer"

    def _error(self, other: Holder) -> WriterLockError:
        return IssuerLockError(self._refusal(other))

    def _refusal(self, other: Holder) -> str:
        head = (f"the bank's records of {redact(self.url)} are already held in memory by "
                f"{other.text()}; two such processes on one database would overwrite each "
                "other's updates: ")
        address = other.listen or "HOST:PORT"
        if other.command == ISSUER_RUN and self.holder.command != ISSUER_RUN:
            return head + (f"reach that host instead with --issuer iso8583://{address}")
        if other.command == ISSUER_RUN:
            return head + f"send to that host ({address}), one bank host per database"
        if self.holder.command == ISSUER_RUN:
            return head + ("stop it first, then start this host and run the back office with "
                           "--issuer iso8583://HOST:PORT (this host's address)")
        return head + ("stop it first, or start `tapsim issuer run` on the database and give "
                       "each back office --issuer iso8583://HOST:PORT")


__all__ = [
    "BACKOFFICE_REPLAY",
    "BACKOFFICE_RUN",
    "ISSUER_RUN",
    "Holder",
    "IssuerLock",
    "IssuerLockError",
    "WriterLock",
    "WriterLockError",
]
