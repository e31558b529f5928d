"""The acquirer's own rows in the back office's database: keys, answers, store-and-forward.

Written in a transaction of their own *before* a message is sent (durable before
sending), so a back office killed at any point finds, on restart:

* ``acq_requests``: every request id the core asked about, the key (field 7, STAN) it was
  given, the fields sent, and its state: ``sent`` (no answer recorded yet), ``answered``
  (the bank's code), ``stood_in`` (the bank was not reached; the code the core got),
  ``unanswered`` (sent, no answer: stood in, and a reversal queued), ``local`` (answered
  from a credit, no message);
* ``acq_saf``: store-and-forward items, sent in order until answered: ``reversal`` (0400
  first, then 0420 advices) and ``forward`` (a stood-in 0100 sent late, so the bank
  knows the verification the aggregate's charge refers to);
* ``acq_credits``: money the bank captured although the core booked no charge (a
  reversal answered "21": the original 0200 had been approved and captured), per card,
  with the requests that used it up (negative rows).

The tables are the acquirer's; the core's tables are never written here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from backoffice.acquirer.mapping import Key
from backoffice.storage.sql import SqlStore
from isolink.dialect import Fields

TABLES = (
    """CREATE TABLE IF NOT EXISTS acq_requests (
        request_id TEXT PRIMARY KEY,
        mti TEXT NOT NULL,
        sent_time TEXT NOT NULL,
        stan TEXT NOT NULL,
        fields TEXT NOT NULL,
        pan_token TEXT NOT NULL,
        amount BIGINT NOT NULL,
        state TEXT NOT NULL,
        code TEXT NOT NULL,
        at_us BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS acq_saf (
        seq BIGINT PRIMARY KEY,
        kind TEXT NOT NULL,
        request_id TEXT NOT NULL,
        sent_time TEXT NOT NULL,
        stan TEXT NOT NULL,
        fields TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        not_found INTEGER NOT NULL,
        state TEXT NOT NULL,
        code TEXT NOT NULL,
        due_us BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS acq_credits (
        ref TEXT PRIMARY KEY,
        pan_token TEXT NOT NULL,
        amount BIGINT NOT NULL)""",
)

_REQ_COLS = "request_id, mti, sent_time, stan, fields, pan_token, amount, state, code, at_us"
_SAF_COLS = "seq, kind, request_id, sent_time, stan, fields, attempts, not_found, state, code, " \
            "due_us"


@dataclass(slots=True)
class RequestRow:
    request_id: str
    mti: str
    key: Key | None  # None: never sent (stood in while the bank was down)
    fields: Fields
    pan_token: str
    amount: int
    state: str
    code: str
    at_us: int


@dataclass(slots=True)
class SafRow:
    seq: int
    kind: str  # reversal, forward
    request_id: str  # the original's
    key: Key
    fields: Fields
    attempts: int
    not_found: int  # "25" answers so far
    state: str  # open, done
    code: str
    due_us: int


def _req(row: tuple[Any, ...]) -> RequestRow:
    rid, mti, time, stan, fields, token, amount, state, code, at = row
    key = Key(time, stan) if stan else None
    return RequestRow(rid, mti, key, json.loads(fields), token, int(amount), state, code, int(at))


def _saf(row: tuple[Any, ...]) -> SafRow:
    seq, kind, rid, time, stan, fields, attempts, nf, state, code, due = row
    return SafRow(int(seq), kind, rid, Key(time, stan), json.loads(fields), int(attempts),
                  int(nf), state, code, int(due))


class Journal:
    """The acquirer's tables on the back office's store (see the module docstring)."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        with store._tx():
            for ddl in TABLES:
                store._execute(ddl)

    def _q(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self.store._query(sql, params)

    def stans_used(self) -> int:
        """How many keys were given so far (the next STAN counts on from here)."""
        a = self._q("SELECT COUNT(*) FROM acq_requests")[0][0]
        b = self._q("SELECT COUNT(*) FROM acq_saf")[0][0]
        return int(a) + int(b)

    def request(self, request_id: str) -> RequestRow | None:
        rows = self._q(f"SELECT {_REQ_COLS} FROM acq_requests WHERE request_id = ?",  # noqa: S608 - column lists are constants
                       (request_id,))
        return _req(rows[0]) if rows else None

    def requests(self, state: str | None = None) -> list[RequestRow]:
        where, params = ("WHERE state = ?", (state,)) if state else ("", ())
        return [_req(r) for r in self._q(
            f"SELECT {_REQ_COLS} FROM acq_requests {where} ORDER BY at_us, request_id", params)]  # noqa: S608 - column lists are constants

    def put_request(self, row: RequestRow, saf: SafRow | None = None) -> None:
        """Insert or replace a request row (and queue ``saf``) in one transaction."""
        store = self.store
        key = row.key or Key("", "")
        with store._tx():
            store._execute("DELETE FROM acq_requests WHERE request_id = ?",
                           (row.request_id,))
            store._execute(
                f"INSERT INTO acq_requests ({_REQ_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608 - column lists are constants
                (row.request_id, row.mti, key.time, key.stan, json.dumps(row.fields),
                 row.pan_token, row.amount, row.state, row.code, row.at_us))
            if saf is not None:
                self._insert_saf(saf)

    def put_answers(self, rows: list[RequestRow]) -> None:
        """Record the answers of requests (rows already written as ``sent``), in one
        transaction."""
        if not rows:
            return
        store = self.store
        with store._tx():
            store._executemany(
                "UPDATE acq_requests SET state = ?, code = ? WHERE request_id = ?",
                [(r.state, r.code, r.request_id) for r in rows])

    def _insert_saf(self, saf: SafRow) -> None:
        self.store._execute(
            f"INSERT INTO acq_saf ({_SAF_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608 - column lists are constants
            (saf.seq, saf.kind, saf.request_id, saf.key.time, saf.key.stan,
             json.dumps(saf.fields), saf.attempts, saf.not_found, saf.state, saf.code,
             saf.due_us))

    def add_saf(self, saf: SafRow) -> None:
        with self.store._tx():
            self._insert_saf(saf)

    def next_seq(self) -> int:
        return int(self._q("SELECT COALESCE(MAX(seq), 0) FROM acq_saf")[0][0]) + 1

    def open_saf(self) -> list[SafRow]:
        return [_saf(r) for r in self._q(
            f"SELECT {_SAF_COLS} FROM acq_saf WHERE state = 'open' ORDER BY seq")]  # noqa: S608 - column lists are constants

    def all_saf(self) -> list[SafRow]:
        return [_saf(r) for r in self._q(f"SELECT {_SAF_COLS} FROM acq_saf ORDER BY seq")]  # noqa: S608 - column lists are constants

    def update_saf(self, saf: SafRow, credit: tuple[str, str, int] | None = None) -> None:
        """Record a SAF item's attempt (and a credit)."""
        store = self.store
        with store._tx():
            store._execute(
                "UPDATE acq_saf SET attempts = ?, not_found = ?, state = ?, code = ?, "
                "due_us = ? WHERE seq = ?",
                (saf.attempts, saf.not_found, saf.state, saf.code, saf.due_us, saf.seq))
            if credit is not None:
                store._execute(
                    "INSERT INTO acq_credits (ref, pan_token, amount) VALUES (?, ?, ?)", credit)

    def credit(self, pan_token: str) -> int:
        """Money the bank holds for the card that the core has not booked (fen)."""
        rows = self._q("SELECT COALESCE(SUM(amount), 0) FROM acq_credits WHERE pan_token = ?",
                       (pan_token,))
        return int(rows[0][0])

    def use_credit(self, ref: str, pan_token: str, amount: int, row: RequestRow) -> None:
        """``amount`` of the card's credit used by request ``ref`` (recorded with it)."""
        store = self.store
        with store._tx():
            store._execute(
                "INSERT INTO acq_credits (ref, pan_token, amount) VALUES (?, ?, ?)",
                ("use:" + ref, pan_token, -amount))
            store._execute("DELETE FROM acq_requests WHERE request_id = ?",
                           (row.request_id,))
            key = row.key or Key("", "")
            store._execute(
                f"INSERT INTO acq_requests ({_REQ_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608 - column lists are constants
                (row.request_id, row.mti, key.time, key.stan, json.dumps(row.fields),
                 row.pan_token, row.amount, row.state, row.code, row.at_us))

    def credits_total(self) -> tuple[int, int]:
        """(captured at the bank after a lost answer, of which used by the core since)."""
        rows = self._q("SELECT COALESCE(SUM(CASE WHEN amount > 0 THEN amount END), 0), "
                       "COALESCE(SUM(CASE WHEN amount < 0 THEN -amount END), 0) "
                       "FROM acq_credits")
        return int(rows[0][0]), int(rows[0][1])

    def bank_captured(self) -> int:
        """What the bank said it captured: approved 0200s, and reversals answered "21"."""
        approved = self._q("SELECT COALESCE(SUM(amount), 0) FROM acq_requests "
                           "WHERE mti = '0200' AND state = 'answered' AND code = '00'")
        return int(approved[0][0]) + self.credits_total()[0]
