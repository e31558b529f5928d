"""Whose database a URL names: tapsim's, an empty one, or another program's.

tapsim writes only into a database it made (or an empty one, which it then makes its own),
never into another application's file or schema (backoffice/README.md, "Storage").  What a
backend finds there (its tables, SQLite's ``application_id``, the meta table's marker and
version rows) is a :class:`Survey`; :func:`classify` says what it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from backoffice.storage.schema import APPLICATION_ID, TABLES, table_names
from issuer.load_sql import TABLES as LOAD_TABLES

KNOWN_TABLES = table_names(TABLES) | table_names(LOAD_TABLES)
"""Every table a tapsim database may hold (the core's, the issuer's, the bank's loads)."""

NAMED_TABLES = 8  # a refusal names at most this many of the other program's tables


class Owner(StrEnum):
    TAPSIM = "tapsim"  # marked as tapsim's (application id or the meta marker row)
    OLDER_TAPSIM = "older tapsim"  # made before the marker: tapsim's tables and version row only
    EMPTY = "empty"  # no tables at all: tapsim may make it its own
    FOREIGN = "foreign"  # anything else: refused


@dataclass(frozen=True, slots=True)
class Survey:
    """What a database holds, as far as ownership goes."""

    tables: frozenset[str]  # the tables (and views) of the file or schema, internal ones left out
    application_id: int = 0  # SQLite's header field (0: none set); PostgreSQL has none
    marker: str | None = None  # meta row MARKER_KEY
    version: str | None = None  # meta row VERSION_KEY


def classify(s: Survey) -> Owner:
    """What the surveyed database is to tapsim."""
    if s.application_id == APPLICATION_ID:
        return Owner.TAPSIM
    if s.application_id != 0:  # another program's registered file format
        return Owner.FOREIGN
    if not s.tables:
        return Owner.EMPTY
    if "meta" in s.tables and s.marker is not None:
        return Owner.TAPSIM
    if "meta" in s.tables and s.version is not None and s.tables <= KNOWN_TABLES:
        return Owner.OLDER_TAPSIM
    return Owner.FOREIGN


def refusal(where: str, s: Survey) -> str:
    """The message refusing a foreign database: what it is and what to give instead."""
    if s.application_id not in (0, APPLICATION_ID) and not s.tables:
        held = f"its application id is {s.application_id:#010x}, not tapsim's"
    else:
        names = sorted(s.tables)
        shown = ", ".join(names[:NAMED_TABLES])
        more = f" and {len(names) - NAMED_TABLES} more" if len(names) > NAMED_TABLES else ""
        held = f"it holds table(s) {shown}{more}"
    return (f"{where} is not a tapsim database ({held}); tapsim writes only into a database "
            "it made: give an empty database or schema, or a new file")


__all__ = ["KNOWN_TABLES", "Owner", "Survey", "classify", "refusal"]
