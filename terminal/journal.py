"""The validator's durable journal: every tap is here before the rider sees its outcome.

SQLite in WAL mode with ``synchronous=FULL``: ``append`` returns only after the tap's
row is committed and the WAL is fsynced, so a validator killed at any instant (or a
power cut) has either not shown the outcome or has the tap on disk.  The uplink reads
unsent rows and marks them sent on the broker's PUBACK, and committed when the back office
says so (wire/README.md, "End-to-end acknowledgement"); a tap sent but not committed in
time goes back to unsent and out again.  Resends are harmless: the back office dedupes on
``tap_id``.

What the validator must remember from its downlink (deny list, fare table version) lives
in a second file beside it (:mod:`terminal.denystore`): applying a snapshot of a million
tokens then never holds the lock a tap's journal write waits for.

One process writes taps (an exclusive ``flock`` on ``<journal>.lock`` refuses a
second); other connections in that process (the uplink) open with ``lock=False``.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import secrets
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_US = dt.timedelta(microseconds=1)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS taps (
    seq INTEGER PRIMARY KEY,
    tap_id TEXT NOT NULL UNIQUE,
    created_us INTEGER NOT NULL,
    pan_token TEXT NOT NULL,
    outcome TEXT NOT NULL,
    payload BLOB NOT NULL,
    sent_us INTEGER,
    committed_us INTEGER
);
CREATE INDEX IF NOT EXISTS taps_unsent ON taps (seq) WHERE sent_us IS NULL;
"""
# After the column exists (journals from before end-to-end acks get it by migration).
_SCHEMA_COMMITS = """
CREATE INDEX IF NOT EXISTS taps_uncommitted ON taps (seq) WHERE committed_us IS NULL;
"""


class JournalError(RuntimeError):
    """The journal cannot be opened or written (path, and what went wrong)."""


def to_us(t: dt.datetime) -> int:
    if t.tzinfo is None:
        raise ValueError("journal times must be timezone-aware")
    return (t - _EPOCH) // _US


def from_us(us: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=us)


def connect(path: Path, durable: bool) -> sqlite3.Connection:
    """An autocommit WAL connection (``durable``: synchronous=FULL), one thread at a time."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
    db.execute("PRAGMA busy_timeout=10000")
    return db


def in_transaction(db: sqlite3.Connection, work: Callable[[sqlite3.Connection], None]) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        work(db)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


@dataclass(frozen=True)
class JournalEntry:
    seq: int
    tap_id: str
    created: dt.datetime
    pan_token: str
    outcome: str
    payload: bytes
    sent: dt.datetime | None


class Journal:
    """One connection to the journal file (see the module docstring for who opens what)."""

    def __init__(self, path: Path | str, *, lock: bool = True, durable: bool = True) -> None:
        self.path = Path(path)
        self._lock_fd: int | None = None
        if lock:
            self._take_lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit: each write is its own durable transaction unless wrapped in
            # BEGIN ... COMMIT (in_transaction).
            self._db = connect(self.path, durable)
            self._db.executescript(_SCHEMA)
            self._migrate()
            self._db.executescript(_SCHEMA_COMMITS)
            self.epoch = self._ensure_epoch()
            row = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM taps").fetchone()
        except sqlite3.Error as exc:
            self._release_lock()
            raise JournalError(f"{self.path}: {exc}") from None
        self._last_seq = int(row[0])

    def _take_lock(self) -> None:
        lock_path = self.path.with_name(self.path.name + ".lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise JournalError(f"{self.path}: another validator process has this journal "
                               "open") from None
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    def _migrate(self) -> None:
        """A journal from before end-to-end acknowledgements: add ``committed_us``; the
        taps it already sent were handled under the old rule (sent = done)."""
        columns = {str(r[1]) for r in self._db.execute("PRAGMA table_info(taps)")}
        if "committed_us" not in columns:
            def work(db: sqlite3.Connection) -> None:
                db.execute("ALTER TABLE taps ADD COLUMN committed_us INTEGER")
                db.execute("UPDATE taps SET committed_us = sent_us WHERE sent_us IS NOT NULL")

            in_transaction(self._db, work)

    def _ensure_epoch(self) -> str:
        # The epoch makes tap ids unique even if a validator's journal is lost and its
        # sequence starts again at 1: the back office would otherwise drop new taps as
        # duplicates of old ones.
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('epoch', ?)", (secrets.token_hex(4),))
        return str(self._db.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()[0])

    def close(self) -> None:
        self._db.close()
        self._release_lock()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- taps --------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        return self._last_seq

    def append(self, seq: int, tap_id: str, created: dt.datetime, pan_token: str,
               outcome: str, payload: bytes) -> None:
        """Write one tap durably (returns after the commit is on disk)."""
        if seq != self._last_seq + 1:
            raise JournalError(f"{self.path}: sequence {seq} after {self._last_seq}")
        try:
            self._db.execute(
                "INSERT INTO taps (seq, tap_id, created_us, pan_token, outcome, payload) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (seq, tap_id, to_us(created), pan_token, outcome, payload))
        except sqlite3.Error as exc:
            raise JournalError(f"{self.path}: tap {seq} not written: {exc}") from None
        self._last_seq = seq

    def unsent(self, limit: int, after_seq: int = 0) -> list[tuple[int, bytes]]:
        """(seq, payload) of unsent taps after ``after_seq``, oldest first."""
        rows = self._db.execute(
            "SELECT seq, payload FROM taps WHERE sent_us IS NULL AND seq > ? ORDER BY seq "
            "LIMIT ?", (after_seq, limit)).fetchall()
        return [(int(s), bytes(p)) for s, p in rows]

    def mark_sent(self, seqs: Iterable[int], at: dt.datetime) -> None:
        stamp = to_us(at)

        def work(db: sqlite3.Connection) -> None:
            db.executemany("UPDATE taps SET sent_us = ? WHERE seq = ? AND sent_us IS NULL",
                           ((stamp, s) for s in seqs))

        self._in_transaction(work)

    def mark_committed(self, tap_ids: Iterable[str], at: dt.datetime) -> int:
        """The back office committed these taps: they leave the pending set for good (an id
        this journal does not hold, or holds committed already, changes nothing)."""
        stamp = to_us(at)
        done = [0]

        def work(db: sqlite3.Connection) -> None:
            cur = db.executemany(
                "UPDATE taps SET committed_us = ?, sent_us = COALESCE(sent_us, ?) "
                "WHERE tap_id = ? AND committed_us IS NULL",
                ((stamp, stamp, t) for t in tap_ids))
            done[0] = cur.rowcount

        self._in_transaction(work)
        return done[0]

    def requeue_uncommitted(self, sent_before: dt.datetime) -> int:
        """Taps sent before ``sent_before`` and still not committed go back to unsent (the
        uplink sends them again); how many."""
        cur = self._db.execute(
            "UPDATE taps SET sent_us = NULL WHERE committed_us IS NULL AND sent_us IS NOT NULL "
            "AND sent_us < ?", (to_us(sent_before),))
        return cur.rowcount

    def uncommitted_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM taps WHERE committed_us IS NULL")
                   .fetchone()[0])

    def unsent_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM taps WHERE sent_us IS NULL")
                   .fetchone()[0])

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM taps").fetchone()[0])

    def entries(self) -> Iterator[JournalEntry]:
        for seq, tap_id, created, token, outcome, payload, sent in self._db.execute(
                "SELECT seq, tap_id, created_us, pan_token, outcome, payload, sent_us "
                "FROM taps ORDER BY seq"):
            yield JournalEntry(int(seq), str(tap_id), from_us(created), str(token), str(outcome),
                               bytes(payload), None if sent is None else from_us(sent))

    def recent_tokens(self, since: dt.datetime, outcome: str) -> dict[str, dt.datetime]:
        """Latest time of each token with ``outcome`` since ``since`` (duplicate filter reload)."""
        rows = self._db.execute(
            "SELECT pan_token, MAX(created_us) FROM taps WHERE created_us >= ? AND outcome = ? "
            "GROUP BY pan_token", (to_us(since), outcome)).fetchall()
        return {str(t): from_us(us) for t, us in rows}

    def prune(self, sent_before: dt.datetime) -> int:
        """Delete taps committed before ``sent_before`` (the journal is not an archive; a
        tap the back office has not confirmed stays, however old)."""
        cur = self._db.execute("DELETE FROM taps WHERE committed_us IS NOT NULL "
                               "AND committed_us < ? AND seq < ?",
                               (to_us(sent_before), self._last_seq))
        return cur.rowcount

    def _in_transaction(self, work: Callable[[sqlite3.Connection], None]) -> None:
        in_transaction(self._db, work)
