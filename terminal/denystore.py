"""What a validator remembers from its downlink: deny list and fare table version.

A SQLite file beside the journal (``<journal>.deny``), so the downlink writing a large
snapshot never holds the write lock a tap's journal append waits for, and a validator
that reboots without network still refuses deny-listed cards.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

from terminal.journal import JournalError, connect, in_transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS deny_tokens (token TEXT PRIMARY KEY) WITHOUT ROWID;
"""


def deny_store_path(journal: Path) -> Path:
    return journal.with_name(journal.name + ".deny")


class DenyStore:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = connect(self.path, durable=True)
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise JournalError(f"{self.path}: {exc}") from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> DenyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE "
                         "SET value = excluded.value", (key, value))

    def load_deny_list(self) -> tuple[int, set[str]]:
        version = int(self.get_meta("deny_version", "0") or 0)
        tokens = {str(t) for (t,) in self._db.execute("SELECT token FROM deny_tokens")}
        return version, tokens

    def save_deny_snapshot(self, version: int, tokens: Iterable[str]) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM deny_tokens")
            db.executemany("INSERT OR IGNORE INTO deny_tokens VALUES (?)", ((t,) for t in tokens))
            _set_version(db, version)

        in_transaction(self._db, work)

    def save_deny_delta(self, version: int, add: Iterable[str], remove: Iterable[str]) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.executemany("INSERT OR IGNORE INTO deny_tokens VALUES (?)", ((t,) for t in add))
            db.executemany("DELETE FROM deny_tokens WHERE token = ?", ((t,) for t in remove))
            _set_version(db, version)

        in_transaction(self._db, work)


def _set_version(db: sqlite3.Connection, version: int) -> None:
    db.execute("INSERT INTO meta VALUES ('deny_version', ?) ON CONFLICT(key) DO UPDATE "
               "SET value = excluded.value", (str(version),))
