"""terminal.journal: durable, ordered, and nothing accepted is lost when the validator dies."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from terminal.denystore import DenyStore, deny_store_path
from terminal.journal import Journal, JournalError

T0 = dt.datetime(2026, 11, 23, 7, 0, tzinfo=dt.UTC)
TOKEN = "ab" * 16


def add(j: Journal, n: int, outcome: str = "accepted", token: str = TOKEN) -> None:
    for _ in range(n):
        seq = j.last_seq + 1
        j.append(seq, f"V1:{j.epoch}:{seq}", T0 + dt.timedelta(seconds=seq), token, outcome,
                 b"payload-%d" % seq)


def test_wal_and_full_sync_are_on(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.db") as j:
        assert j._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert j._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_sequence_is_contiguous_and_epoch_stable(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.db") as j:
        add(j, 3)
        epoch = j.epoch
        with pytest.raises(JournalError, match="sequence 9 after 3"):
            j.append(9, "x", T0, TOKEN, "accepted", b"")
    with Journal(tmp_path / "j.db") as j:
        assert j.epoch == epoch and j.last_seq == 3
    with Journal(tmp_path / "other.db") as k:
        assert k.epoch != epoch  # a lost journal starts a new epoch: tap ids never repeat


def test_tap_ids_are_unique(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.db") as j:
        add(j, 1)
        with pytest.raises(JournalError, match="not written"):
            j.append(2, f"V1:{j.epoch}:1", T0, TOKEN, "accepted", b"")
        assert j.last_seq == 1


def test_unsent_and_mark_sent(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.db") as j:
        add(j, 10)
        assert [s for s, _ in j.unsent(4)] == [1, 2, 3, 4]
        assert [s for s, _ in j.unsent(100, after_seq=8)] == [9, 10]
        j.mark_sent([2, 3, 9], T0)
        assert [s for s, _ in j.unsent(100)] == [1, 4, 5, 6, 7, 8, 10]
        assert j.unsent_count() == 7
        j.mark_sent([3], T0 + dt.timedelta(hours=1))  # a second PUBACK changes nothing
        sent = {e.seq: e.sent for e in j.entries() if e.sent}
        assert sent == {2: T0, 3: T0, 9: T0}


def test_prune_keeps_unconfirmed_and_the_latest(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.db") as j:
        add(j, 5)
        j.mark_sent([1, 2, 4, 5], T0)
        j.mark_committed([j_id(j, 1), j_id(j, 2), j_id(j, 5)], T0)
        # 4 was sent but the back office never confirmed it: it stays.
        assert j.prune(T0 + dt.timedelta(days=1)) == 2
        assert [e.seq for e in j.entries()] == [3, 4, 5]
        assert j.last_seq == 5


def j_id(j: Journal, seq: int) -> str:
    return next(e.tap_id for e in j.entries() if e.seq == seq)


def test_commits_and_requeues(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.db") as j:
        add(j, 4)
        j.mark_sent([1, 2, 3], T0)
        assert j.mark_committed([j_id(j, 1), "V9:zz:1", j_id(j, 1)], T0) == 1  # once, ours
        assert j.uncommitted_count() == 3
        # Committed before its PUBACK was marked: it is not sent again.
        assert j.mark_committed([j_id(j, 4)], T0) == 1
        assert j.unsent_count() == 0
        assert j.requeue_uncommitted(T0) == 0  # not older than T0
        assert j.requeue_uncommitted(T0 + dt.timedelta(seconds=1)) == 2
        assert [s for s, _ in j.unsent(10)] == [2, 3]


def test_a_journal_from_before_commit_acks_is_migrated(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE taps (seq INTEGER PRIMARY KEY, tap_id TEXT NOT NULL UNIQUE,
            created_us INTEGER NOT NULL, pan_token TEXT NOT NULL, outcome TEXT NOT NULL,
            payload BLOB NOT NULL, sent_us INTEGER);
        INSERT INTO taps VALUES (1, 'V1:a:1', 0, 't', 'accepted', x'00', 5);
        INSERT INTO taps VALUES (2, 'V1:a:2', 0, 't', 'accepted', x'00', NULL);
    """)
    db.commit()
    db.close()
    with Journal(path) as j:
        # Sent under the old rule counts as done; the unsent one is pending as before.
        assert j.uncommitted_count() == 1 and [s for s, _ in j.unsent(10)] == [2]


def test_recent_tokens_for_duplicate_reload(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.db") as j:
        add(j, 3)
        add(j, 1, outcome="duplicate")
        add(j, 1, token="cd" * 16)
        assert j.recent_tokens(T0, "accepted") == {TOKEN: T0 + dt.timedelta(seconds=3),
                                                   "cd" * 16: T0 + dt.timedelta(seconds=5)}
        assert j.recent_tokens(T0 + dt.timedelta(seconds=4), "accepted") == {
            "cd" * 16: T0 + dt.timedelta(seconds=5)}


def test_deny_list_persists_beside_the_journal(tmp_path: Path) -> None:
    path = deny_store_path(tmp_path / "j.db")
    assert path.name == "j.db.deny"
    with DenyStore(path) as d:
        assert d.load_deny_list() == (0, set())
        d.save_deny_snapshot(4, ["a" * 32, "b" * 32])
        d.save_deny_delta(5, add=["c" * 32], remove=["a" * 32])
        d.set_meta("fare_version", "3")
    with DenyStore(path) as d:
        assert d.load_deny_list() == (5, {"b" * 32, "c" * 32})
        assert d.get_meta("fare_version") == "3"


def test_naive_times_are_refused(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.db") as j, pytest.raises(ValueError, match="timezone-aware"):
        j.append(1, "x", dt.datetime(2026, 1, 1), TOKEN, "accepted", b"")


def test_unusable_path_is_a_journal_error(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(JournalError, match=r"dir\.db"):
        Journal(tmp_path / "dir.db", lock=False)


# -- kill -9 mid-burst -----------------------------------------------------------------

def _validator(journal: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tapsim.cli", "terminal", "run", "--reader", "virtual",
         "--journal", str(journal), "--validator-id", "K1", "--duplicate-window", "0",
         "--json", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_sigkill_mid_burst_loses_no_shown_tap(tmp_path: Path) -> None:
    """Kill the validator at random instants; every tap it showed is in the journal, once."""
    journal = tmp_path / "k1.journal"
    rng = random.Random(6)
    shown: list[str] = []
    for _ in range(3):
        proc = _validator(journal, "--taps", "100000")
        assert proc.stdout is not None
        target = rng.randint(5, 60)
        for _ in range(target):
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else "validator died"
            event = json.loads(line)
            if event["outcome"] == "accepted":
                shown.append(event["tap_id"])
        time.sleep(rng.uniform(0, 0.004))  # somewhere inside the next tap or write
        proc.send_signal(signal.SIGKILL)
        rest, err = proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        # lines printed before the kill landed count as shown too
        shown += [json.loads(x)["tap_id"] for x in rest.splitlines()
                  if x.startswith("{") and json.loads(x)["outcome"] == "accepted"]
    db = sqlite3.connect(journal)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = db.execute("SELECT seq, tap_id FROM taps ORDER BY seq").fetchall()
    db.close()
    ids = [tap_id for _, tap_id in rows]
    assert [seq for seq, _ in rows] == list(range(1, len(rows) + 1))  # no hole, no repeat
    assert len(set(ids)) == len(ids)
    assert set(shown) <= set(ids), "a tap was shown but is not in the journal"
    assert len(ids) - len(shown) <= 3  # at most the one in flight per kill was not shown
    # The restarted validator carries on from where the journal ends.
    proc = _validator(journal, "--taps", "2")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    seqs = [json.loads(x)["seq"] for x in out.splitlines()]
    assert seqs == [len(rows) + 1, len(rows) + 2]
