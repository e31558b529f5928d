"""PostgreSQL through psycopg 3: the deployment backend.

Append-only rows (taps, ledger entries) go in with ``COPY``; upserts with ``executemany``
(pipelined by psycopg).  ``?schema=NAME`` in the URL puts the tables in their own schema
(created if missing), which is how the tests get a fresh database per run.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from backoffice.storage.base import StorageError, StorageUnavailableError, redact
from backoffice.storage.sql import Params, SqlStore

_SCHEMA = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def split_schema(url: str) -> tuple[str, str | None]:
    """The libpq URL without our ``schema`` parameter, and that parameter."""
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
    return urlunsplit(parts._replace(query=urlencode(kept))), schema


def _pg(statement: str) -> str:
    return statement.replace("?", "%s")


class PostgresStore(SqlStore):
    backend = "postgresql"
    _lock_clause = " FOR UPDATE"  # the issuer lock (SqlStore._lock_issuer)

    def __init__(self, url: str, connect_timeout: int = 5) -> None:
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
        if self.schema is not None:
            ident = sql.Identifier(self.schema)
            self._conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
            self._conn.execute(sql.SQL("SET search_path TO {}").format(ident))
        self._create_schema()

    def _serial(self) -> str:
        return "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"

    def _execute(self, statement: str, params: Params = ()) -> None:
        try:
            self._conn.execute(_pg(statement), params)
        except psycopg.Error as exc:
            raise StorageError(f"postgresql: {exc}") from exc

    def _executemany(self, statement: str, rows: Sequence[Params]) -> None:
        try:
            with self._conn.cursor() as cur:
                cur.executemany(_pg(statement), rows)
        except psycopg.Error as exc:
            raise StorageError(f"postgresql: {exc}") from exc

    def _query(self, statement: str, params: Params = ()) -> list[tuple[Any, ...]]:
        try:
            with self._conn.cursor() as cur:
                cur.execute(_pg(statement), params)
                return cur.fetchall()
        except psycopg.Error as exc:
            raise StorageError(f"postgresql: {exc}") from exc

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
            raise StorageError(f"postgresql: {exc}") from exc

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        try:
            with self._conn.transaction():
                yield
        except psycopg.Error as exc:
            raise StorageError(f"postgresql: {exc}") from exc

    def close(self) -> None:
        self._conn.close()
