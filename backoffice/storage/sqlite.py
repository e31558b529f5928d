"""The embedded default: SQLite in WAL mode through the standard library.

One connection, explicit ``BEGIN IMMEDIATE`` / ``COMMIT`` per batch.  WAL lets readers
(reports) run beside the writer; ``synchronous=FULL`` (the default here) makes a committed
batch survive power loss, ``normal`` only a process crash (choose with
``sqlite:///path.db?synchronous=normal``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from backoffice.storage.base import StorageError, StorageUnavailableError
from backoffice.storage.sql import Params, SqlStore

SYNCHRONOUS = ("off", "normal", "full", "extra")


class SqliteStore(SqlStore):
    backend = "sqlite"

    def __init__(self, url: str, path: str, synchronous: str = "full") -> None:
        super().__init__(url)
        if synchronous not in SYNCHRONOUS:
            raise StorageError(f"sqlite synchronous must be one of {', '.join(SYNCHRONOUS)}")
        if path != ":memory:":
            parent = Path(path).parent
            if not parent.is_dir():
                raise StorageUnavailableError(f"sqlite: directory {parent} does not exist")
        try:
            self._conn = sqlite3.connect(path, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._conn.execute("PRAGMA busy_timeout=5000")
            self._conn.execute("PRAGMA cache_size=-65536")  # 64 MiB: indexes stay in memory
        except sqlite3.Error as exc:
            raise StorageUnavailableError(f"sqlite: cannot open {path}: {exc}") from None
        self._create_schema()

    def _execute(self, sql: str, params: Params = ()) -> None:
        try:
            self._conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise StorageError(f"sqlite: {exc}") from exc

    def _executemany(self, sql: str, rows: Sequence[Params]) -> None:
        try:
            self._conn.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise StorageError(f"sqlite: {exc}") from exc

    def _query(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"sqlite: {exc}") from exc

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        self._execute("COMMIT")

    def close(self) -> None:
        self._conn.close()
