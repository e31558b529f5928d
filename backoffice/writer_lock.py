"""One writer per database: the lock a long-running back office holds on its database.

The transaction core keeps every card's working state in memory and trusts that nobody
else writes its tables (backoffice/README.md, "Storage and restarts"): a second
``tapsim backoffice run`` on the same database would decide from stale memory and could
charge a card twice.  So the consumer takes this lock first and refuses to start without
it.  SQLite: an exclusive ``flock`` on ``<database>.writer.lock`` beside the file (released
by the kernel when the process dies, even by SIGKILL).  PostgreSQL: a session-level
advisory lock keyed by database schema, on a connection of its own (released when that
connection ends).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from backoffice.storage.base import StorageError, StorageUnavailableError, redact
from backoffice.storage.urls import is_sqlite, parse_sqlite_url


class WriterLockError(StorageError):
    """Another back office already writes this database (or the lock cannot be taken)."""


class WriterLock:
    """Held from :meth:`acquire` to :meth:`release` (or the process's end)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._fd: int | None = None
        self._conn: Any = None

    def acquire(self) -> WriterLock:
        if is_sqlite(self.url):
            self._sqlite()
        else:
            self._postgres()
        return self

    def _sqlite(self) -> None:
        parsed = parse_sqlite_url(self.url)
        if parsed.in_memory:
            return  # a private in-memory database has no other writer
        lock = Path(parsed.path + ".writer.lock")
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise WriterLockError(f"sqlite: cannot open the writer lock {lock}: "
                                  f"{exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise WriterLockError(f"another back office is writing {redact(self.url)} "
                                  f"(it holds {lock})") from None
        self._fd = fd

    def _postgres(self) -> None:
        import psycopg  # noqa: PLC0415 - only PostgreSQL needs it

        from backoffice.storage.postgres import split_schema  # noqa: PLC0415

        conninfo, schema = split_schema(self.url)
        key = int.from_bytes(hashlib.sha256(
            f"tapsim.backoffice.writer:{urlsplit(conninfo).path}:{schema}".encode()).digest()[:8],
            "big", signed=True)
        try:
            conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=5)
        except psycopg.Error as exc:
            raise StorageUnavailableError(f"postgresql: cannot connect to {redact(self.url)} "
                                          f"for the writer lock: {type(exc).__name__}") from None
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
        if not row or not row[0]:
            conn.close()
            raise WriterLockError(f"another back office is writing {redact(self.url)} "
                                  "(it holds the writer advisory lock)")
        self._conn = conn

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


__all__ = ["WriterLock", "WriterLockError"]
