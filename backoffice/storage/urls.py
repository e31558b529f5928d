"""Database URLs, read the way SQLAlchemy reads them, in one place.

After ``sqlite://`` comes an empty host and then ``/`` and the file's path, so:

* ``sqlite:///rel.db``: ``rel.db`` relative to the current directory (three slashes);
* ``sqlite:////srv/tapsim/bo.db``: the absolute path ``/srv/tapsim/bo.db`` (four);
* ``sqlite:///:memory:`` or ``sqlite://``: a private in-memory database;
* ``?synchronous=full|normal|...`` after any of them.

Python users know this convention from SQLAlchemy (and tapsim once read three slashes as an
absolute path, which put ``sqlite:///bank.db`` at the file system's root).  A bare path (no
``://``) is an SQLite file too; :func:`sqlite_url` turns one into its URL.  Anything else
that starts with ``sqlite:`` (a host, ``sqlite:/x.db``, no path) is an error naming the form
to write, never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

from backoffice.storage.base import StorageError

SQLITE_OPTIONS = frozenset({"synchronous"})
MEMORY = ":memory:"
_FORMS = "sqlite:///relative/path.db, sqlite:////absolute/path.db or sqlite:///:memory:"


@dataclass(frozen=True)
class SqliteUrl:
    """An ``sqlite:`` URL taken apart: ``path`` is ``:memory:`` or a file path as written."""

    path: str
    options: dict[str, str]

    @property
    def in_memory(self) -> bool:
        return self.path == MEMORY


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite:")


def parse_sqlite_url(url: str) -> SqliteUrl:
    """``url`` taken apart (SQLAlchemy's reading), or a :class:`StorageError` saying why not."""
    if not url.startswith("sqlite://"):
        raise StorageError(f"sqlite URL {url!r}: write {_FORMS}")
    rest, _, query = url[len("sqlite://"):].partition("?")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise StorageError(f"sqlite URL {url!r}: the options after '?' are not name=value"
                           ) from None
    options = dict(pairs)
    unknown = set(options) - SQLITE_OPTIONS
    if unknown:
        raise StorageError(f"sqlite URL: unknown option(s) {', '.join(sorted(unknown))} "
                           f"(known: {', '.join(sorted(SQLITE_OPTIONS))})")
    if rest == "":
        return SqliteUrl(MEMORY, options)
    host, slash, path = rest.partition("/")
    if host or not slash:
        raise StorageError(f"sqlite URL {url!r} names a host {host!r}: "
                           f"write {_FORMS}")
    if not path:
        raise StorageError(f"sqlite URL {url!r} names no file: write {_FORMS}")
    return SqliteUrl(path, options)


def sqlite_url(path: str | Path) -> str:
    """The URL of the SQLite file at ``path`` (an absolute path gives four slashes)."""
    return f"sqlite:///{path}"


def database_url(text: str) -> str:
    """A URL for ``text``: a URL as it is, a bare path as the URL of that SQLite file
    (absolute, so it means the same file from any directory)."""
    if "://" in text:
        return text
    if text.startswith("sqlite:"):
        parse_sqlite_url(text)  # raises: sqlite:x.db is not a path
    return sqlite_url(Path(text).resolve())


__all__ = ["MEMORY", "SqliteUrl", "database_url", "is_sqlite", "parse_sqlite_url", "sqlite_url"]
