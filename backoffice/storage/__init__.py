"""Storage of the transaction core behind one interface, chosen by URL.

* ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` (SQLAlchemy's reading:
  :mod:`backoffice.storage.urls`), ``?synchronous=full|normal``; ``sqlite:///:memory:``
* ``postgresql://user@host:port/dbname`` (tables in schema ``tapsim``, or ``?schema=NAME``)

tapsim writes only into a database it made or an empty one (``backoffice.storage.owner``);
``read_only=True`` opens without creating or changing anything (``tapsim account show``).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from backoffice.storage.base import (
    BalanceRow,
    FareRow,
    IssuerConflictError,
    StorageBusyError,
    StorageError,
    StorageUnavailableError,
    Store,
    redact,
)
from backoffice.storage.postgres import PostgresStore
from backoffice.storage.sql import SqlStore
from backoffice.storage.sqlite import SqliteStore
from backoffice.storage.urls import database_url, is_sqlite, parse_sqlite_url, sqlite_url


def open_store(url: str, *, read_only: bool = False) -> SqlStore:
    """A store for ``url``: tapsim's database, or an empty one made tapsim's (tables created),
    else a StorageError; with ``read_only`` an existing tapsim database only, unchanged."""
    if is_sqlite(url):
        parsed = parse_sqlite_url(url)
        return SqliteStore(url, parsed.path, parsed.options.get("synchronous", "full"),
                           read_only=read_only)
    scheme = urlsplit(url).scheme
    if scheme in ("postgresql", "postgres"):
        return PostgresStore(url, read_only=read_only)
    raise StorageError(
        f"unsupported database URL {redact(url)!r}: use sqlite:///path.db or postgresql://..."
    )


__all__ = [
    "BalanceRow",
    "FareRow",
    "IssuerConflictError",
    "PostgresStore",
    "SqlStore",
    "SqliteStore",
    "StorageBusyError",
    "StorageError",
    "StorageUnavailableError",
    "Store",
    "database_url",
    "open_store",
    "redact",
    "sqlite_url",
]
