"""PostgreSQL through psycopg 3: the deployment backend.

Append-only rows (taps, ledger entries) go in with ``COPY``; upserts with ``executemany``
(pipelined by psycopg).  The tables live in a schema tapsim owns: ``tapsim`` unless the URL
says ``?schema=NAME`` (created if missing, by a command that writes), which is how the tests
get a fresh database per run.  A schema holding another program's tables is refused
(:mod:`backoffice.storage.owner`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from backoffice.storage.base import StorageError, StorageUnavailableError, redact
from backoffice.storage.owner import Survey
from backoffice.storage.sql import Params, SqlStore

_SCHEMA = re.compile(r"[a-z_][a-z0-9_]{0,62}")
DEFAULT_SCHEMA = "tapsim"
"""The schema of a URL without ``?schema=``: one tapsim owns, beside any other program's."""


def split_schema(url: str) -> tuple[str, str]:
    """The libpq URL without our ``schema`` parameter, and the schema (DEFAULT_SCHEMA if the
    URL names none)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = None
    kept = []
    for key, value in query:
        if key == "schema":
            schema = value
        else:
            kept.append((key, value))
    if schema is not None and not _SCHEMA.fullmatch(schema):
        raise StorageError("postgresql: schema must be a lowercase SQL identifier")
    # quote, not quote_plus: libpq reads %20 as a space (options=-c%20x%3Dy) but not "+"
    return (urlunsplit(parts._replace(query=urlencode(kept, quote_via=quote))),
            schema or DEFAULT_SCHEMA)


def _names_schema(url: str) -> bool:
    return any(k == "schema" for k, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True))


def _pg(statement: str) -> str:
    return statement.replace("?", "%s")


class PostgresStore(SqlStore):
    backend = "postgresql"
    _lock_clause = " FOR UPDATE"  # the issuer lock (SqlStore._lock_issuer)

    def __init__(self, url: str, connect_timeout: int = 5, *, read_only: bool = False) -> None:
        super().__init__(redact(url))
        conninfo, self.schema = split_schema(url)
        try:
            self._conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=connect_timeout)
        except psycopg.Error as exc:
            # libpq's message names host and port, never the password.
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StorageUnavailableError(
                f"postgresql: cannot connect to {self.url}: {reason}"
            ) from None
        try:
            self._enter_schema(url, read_only)
            self._open_schema(read_only=read_only)
        except BaseException:
            self._conn.close()
            raise

    def _enter_schema(self, url: str, read_only: bool) -> None:
        """Make the schema the session's (created if missing, unless ``read_only``; then the
        session is read-only too)."""
        ident = sql.Identifier(self.schema)
        if read_only:
            self._execute("SET default_transaction_read_only = on")
        if not self._schema_exists(self.schema):
            older = not _names_schema(url) and self._has_meta("public")
            if older:  # an older tapsim put its tables in public when no schema was given
                raise StorageError(
                    f"{self._where()} does not exist, but schema public holds tapsim tables "
                    "(made by an older tapsim): add ?schema=public to the URL to use them")
            if read_only:
                raise StorageError(f"{self._where()} does not exist (nothing to read; tapsim "
                                   "card issue or a replay creates it)")
            self._execute_sql(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
        self._execute_sql(sql.SQL("SET search_path TO {}").format(ident))

    def _schema_exists(self, schema: str) -> bool:
        return bool(self._query("SELECT 1 FROM pg_namespace WHERE nspname = ?", (schema,)))

    def _has_meta(self, schema: str) -> bool:
        return bool(self._query("SELECT 1 FROM information_schema.tables WHERE "
                                "table_schema = ? AND table_name = 'meta'", (schema,)))

    def _execute_sql(self, statement: sql.Composed) -> None:
        try:
            self._conn.execute(statement)
        except psycopg.Error as exc:
            raise self._error(exc) from exc

    def _where(self) -> str:
        return f"postgresql schema {self.schema} of {self.url}"

    def _survey(self) -> Survey:
        rows = self._query("SELECT table_name FROM information_schema.tables "
                           "WHERE table_schema = ?", (self.schema,))
        tables = frozenset(str(r[0]) for r in rows)
        marker, version = self._meta_rows(tables)
        return Survey(tables, 0, marker, version)

    def _error(self, exc: psycopg.Error) -> StorageError:
        """A storage error; a lock waited for too long, a read-only database or a full disk
        said in words."""
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, pg_errors.LockNotAvailable):  # lock_timeout (a branch operation)
            return self._busy()
        if isinstance(exc, pg_errors.ReadOnlySqlTransaction):
            return StorageError(f"{self._where()} is read-only: cannot write to it ({first})")
        if isinstance(exc, pg_errors.InsufficientPrivilege):
            return StorageError(f"{self._where()}: not allowed ({first})")
        if isinstance(exc, pg_errors.DiskFull):
            return StorageError(f"{self._where()}: the disk is full, nothing written ({first})")
        return StorageError(f"postgresql: {exc}")

    def _serial(self) -> str:
        return "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"

    def _execute(self, statement: str, params: Params = ()) -> None:
        try:
            self._conn.execute(_pg(statement), params)
        except psycopg.Error as exc:
            raise self._error(exc) from exc

    def _executemany(self, statement: str, rows: Sequence[Params]) -> None:
        try:
            with self._conn.cursor() as cur:
                cur.executemany(_pg(statement), rows)
        except psycopg.Error as exc:
            raise self._error(exc) from exc

    def _query(self, statement: str, params: Params = ()) -> list[tuple[Any, ...]]:
        try:
            with self._conn.cursor() as cur:
                cur.execute(_pg(statement), params)
                return cur.fetchall()
        except psycopg.Error as exc:
            raise self._error(exc) from exc

    def _bulk_insert(self, table: str, fields: Sequence[str], rows: Sequence[Params]) -> None:
        if not rows:
            return
        statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(f) for f in fields)
        )
        try:
            with self._conn.cursor() as cur, cur.copy(statement) as copy:
                write = copy.write_row
                for row in rows:
                    write(row)
        except psycopg.Error as exc:
            raise self._error(exc) from exc

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        try:
            with self._conn.transaction():
                yield
        except psycopg.Error as exc:
            raise self._error(exc) from exc

    def close(self) -> None:
        self._conn.close()
