"""The embedded default: SQLite in WAL mode through the standard library.

One connection, explicit ``BEGIN IMMEDIATE`` / ``COMMIT`` per batch.  WAL lets readers
(reports) run beside the writer; ``synchronous=FULL`` (the default here) makes a committed
batch survive power loss, ``normal`` only a process crash (choose with
``sqlite:///path.db?synchronous=normal``).  WAL is switched on only once the file is known to be
tapsim's (``backoffice.storage.owner``): another program's file is refused untouched.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from backoffice.storage.base import StorageError, StorageUnavailableError
from backoffice.storage.owner import Survey
from backoffice.storage.schema import APPLICATION_ID
from backoffice.storage.sql import Params, SqlStore

SYNCHRONOUS = ("off", "normal", "full", "extra")


def _read_only_uri(path: Path) -> str:
    """The URI opening ``path`` read-only.  In a folder this process cannot write, SQLite
    could not make the -shm file a WAL database's readers need; with no -wal file there
    either, nothing can be writing it, so it is read as an immutable file instead."""
    uri = f"file:{quote(str(path.absolute()))}?mode=ro"
    wal = path.with_name(path.name + "-wal")
    if not os.access(path.parent, os.W_OK) and not wal.exists():
        uri += "&immutable=1"
    return uri


class SqliteStore(SqlStore):
    backend = "sqlite"

    def __init__(self, url: str, path: str, synchronous: str = "full", *,
                 read_only: bool = False) -> None:
        super().__init__(url)
        if synchronous not in SYNCHRONOUS:
            raise StorageError(f"sqlite synchronous must be one of {', '.join(SYNCHRONOUS)}")
        self._path = path
        self._synchronous = synchronous
        if path != ":memory:":
            parent = Path(path).parent
            if not parent.is_dir():
                raise StorageUnavailableError(f"sqlite: directory {parent} does not exist")
            if read_only and not Path(path).exists():
                raise StorageUnavailableError(f"sqlite: no database file {path}")
        try:
            if read_only and path != ":memory:":  # SQLite itself then refuses every write
                self._conn = sqlite3.connect(_read_only_uri(Path(path)), isolation_level=None,
                                             uri=True)
            else:
                self._conn = sqlite3.connect(path, isolation_level=None)
            self._conn.execute("PRAGMA busy_timeout=5000")
        except sqlite3.Error as exc:
            raise StorageUnavailableError(f"sqlite: cannot open {path}: {exc}") from None
        try:
            self._open_schema(read_only=read_only)
        except BaseException:
            self._conn.close()
            raise

    def _where(self) -> str:
        return f"sqlite file {self._path}"

    def _survey(self) -> Survey:
        try:
            app_id = int(self._conn.execute("PRAGMA application_id").fetchone()[0])
            tables = frozenset(r[0] for r in self._conn.execute(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
                "AND name NOT LIKE 'sqlite!_%' ESCAPE '!'"))
        except sqlite3.Error as exc:
            if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_NOTADB:
                raise StorageError(f"{self._where()} is not an SQLite database ({exc})") from None
            raise self._error(exc) from None
        marker, version = self._meta_rows(tables)
        return Survey(tables, app_id, marker, version)

    def _prepare_writes(self) -> None:
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(f"PRAGMA synchronous={self._synchronous.upper()}")
            self._conn.execute("PRAGMA cache_size=-65536")  # 64 MiB: indexes stay in memory
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    def _stamp(self) -> None:
        self._execute(f"PRAGMA application_id={APPLICATION_ID}")

    def _error(self, exc: Exception) -> StorageError:
        """A storage error naming the file; a busy database, a read-only or full disk said in
        words."""
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None and code & 0xFF == sqlite3.SQLITE_BUSY:  # past busy_timeout
            return self._busy()
        if code is not None and code & 0xFF == sqlite3.SQLITE_READONLY:
            return StorageError(f"{self._where()} is read-only: cannot write to it ({exc}; "
                                "check the permissions of the file and its folder)")
        if code is not None and code & 0xFF == sqlite3.SQLITE_FULL:
            return StorageError(f"{self._where()}: the disk is full, nothing written ({exc})")
        if code is not None and code & 0xFF == sqlite3.SQLITE_IOERR:
            return StorageError(f"{self._where()}: cannot read or write it ({exc}; is the disk "
                                "full, or the device failing?)")
        if isinstance(exc, OverflowError):
            return StorageError(f"{self._where()}: a number too large for a 64-bit column "
                                f"({exc}); nothing written")
        return StorageError(f"sqlite: {exc}")

    def _execute(self, sql: str, params: Params = ()) -> None:
        try:
            self._conn.execute(sql, params)
        except (sqlite3.Error, OverflowError) as exc:
            raise self._error(exc) from exc

    def _executemany(self, sql: str, rows: Sequence[Params]) -> None:
        try:
            self._conn.executemany(sql, rows)
        except (sqlite3.Error, OverflowError) as exc:
            raise self._error(exc) from exc

    def _query(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except (sqlite3.Error, OverflowError) as exc:
            raise self._error(exc) from exc

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._execute("BEGIN IMMEDIATE")
        try:
            yield
            self._execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._conn.close()
