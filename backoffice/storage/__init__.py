"""Storage of the transaction core behind one interface, chosen by URL.

* ``sqlite:///absolute/path.db`` (``?synchronous=full|normal``), ``sqlite:///:memory:``
* ``postgresql://user@host:port/dbname`` (``?schema=NAME`` for a schema of its own)
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from backoffice.storage.base import (
    BalanceRow,
    FareRow,
    StorageError,
    StorageUnavailableError,
    Store,
    redact,
)
from backoffice.storage.postgres import PostgresStore
from backoffice.storage.sql import SqlStore
from backoffice.storage.sqlite import SqliteStore


def open_store(url: str) -> SqlStore:
    """A store for ``url`` (schema created if missing)."""
    if url.startswith("sqlite://"):
        rest = url[len("sqlite://") :]
        path, _, query = rest.partition("?")
        options = dict(parse_qsl(query))
        unknown = set(options) - {"synchronous"}
        if unknown:
            raise StorageError(f"sqlite URL: unknown option(s) {', '.join(sorted(unknown))}")
        if path in ("/:memory:", ":memory:"):
            path = ":memory:"
        elif not path.startswith("/") or len(path) < 2:
            raise StorageError("sqlite URL must be sqlite:///absolute/path (three slashes)")
        return SqliteStore(url, path, options.get("synchronous", "full"))
    scheme = urlsplit(url).scheme
    if scheme in ("postgresql", "postgres"):
        return PostgresStore(url)
    raise StorageError(
        f"unsupported database URL {redact(url)!r}: use sqlite:///path or postgresql://..."
    )


__all__ = [
    "BalanceRow",
    "FareRow",
    "PostgresStore",
    "SqlStore",
    "SqliteStore",
    "StorageError",
    "StorageUnavailableError",
    "Store",
    "open_store",
    "redact",
]
