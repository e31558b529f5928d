"""terminal.denylist: signed downlink applied by the version rules, persisted first."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pytest

from terminal.denylist import Downlink
from terminal.denystore import DenyStore
from wire import (
    DenyListDelta,
    DenyListSnapshot,
    FareTableVersion,
    Reason,
    Signer,
    Verifier,
    encode,
    generate_signing_key,
    topics,
)

KEY = generate_signing_key()
SIGN = Signer(KEY).sign
T0 = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)
TOK = [f"{i:032x}" for i in range(20)]


def snap(v: int, tokens: list[str]) -> bytes:
    return SIGN(DenyListSnapshot(version=v, issued_at=T0, tokens=tokens))


def delta(a: int, b: int, add: list[str] = [], remove: list[str] = []) -> bytes:  # noqa: B006
    return SIGN(DenyListDelta(from_version=a, to_version=b, issued_at=T0, add=add, remove=remove))


@pytest.fixture
def dl(tmp_path: Path) -> Downlink:
    return Downlink(Verifier(KEY.public_key()), DenyStore(tmp_path / "j.db.deny"))


def test_snapshot_then_deltas(dl: Downlink) -> None:
    assert dl.handle(topics.DENY_SNAPSHOT, snap(3, TOK[:3])) is None
    assert dl.handle(topics.DENY_DELTA, delta(3, 4, add=[TOK[5]], remove=[TOK[0]])) is None
    assert dl.deny_list.version == 4 and dl.deny_list.tokens() == {TOK[1], TOK[2], TOK[5]}
    assert TOK[5] in dl.deny_list and TOK[0] not in dl.deny_list
    assert dl.store.load_deny_list() == (4, {TOK[1], TOK[2], TOK[5]})


def test_repeated_retained_snapshot_is_stale_not_an_error(dl: Downlink) -> None:
    dl.handle(topics.DENY_SNAPSHOT, snap(3, TOK[:3]))
    assert dl.handle(topics.DENY_SNAPSHOT, snap(3, [])) is Reason.STALE
    assert dl.deny_list.tokens() == set(TOK[:3])


def test_an_older_snapshot_is_a_warning_the_same_one_is_not(
        dl: Downlink, caplog: pytest.LogCaptureFixture) -> None:
    """The retained snapshot at the version held comes on every reconnect (DEBUG); one older
    than held means the back office went back (a restored database?): WARNING."""
    dl.handle(topics.DENY_SNAPSHOT, snap(5, TOK[:3]))
    with caplog.at_level(logging.DEBUG, logger="tapsim.terminal.downlink"):
        assert dl.handle(topics.DENY_SNAPSHOT, snap(5, TOK[:3])) is Reason.STALE
        assert [r.levelno for r in caplog.records] == [logging.DEBUG]
        caplog.clear()
        assert dl.handle(topics.DENY_SNAPSHOT, snap(2, [])) is Reason.STALE
        assert dl.handle(topics.DENY_DELTA, delta(1, 2, add=[TOK[9]])) is Reason.STALE
        assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.WARNING]
    assert dl.deny_list.version == 5 and dl.deny_list.tokens() == set(TOK[:3])


def test_gap_waits_for_the_snapshot_that_closes_it(dl: Downlink) -> None:
    dl.handle(topics.DENY_SNAPSHOT, snap(1, []))
    assert dl.handle(topics.DENY_DELTA, delta(3, 4, add=[TOK[4]])) is Reason.GAP
    assert dl.handle(topics.DENY_DELTA, delta(4, 5, add=[TOK[5]])) is Reason.GAP
    assert dl.deny_list.version == 1
    dl.handle(topics.DENY_SNAPSHOT, snap(3, [TOK[3]]))
    assert dl.deny_list.version == 5 and dl.deny_list.tokens() == {TOK[3], TOK[4], TOK[5]}
    assert dl.store.load_deny_list()[0] == 5


def test_a_newer_snapshot_drops_older_pending_deltas(dl: Downlink) -> None:
    dl.handle(topics.DENY_DELTA, delta(2, 3, add=[TOK[2]]))
    dl.handle(topics.DENY_SNAPSHOT, snap(6, [TOK[6]]))
    assert dl.deny_list.version == 6 and dl.deny_list.tokens() == {TOK[6]}
    assert dl.handle(topics.DENY_DELTA, delta(2, 3)) is Reason.STALE


def test_refusals_change_nothing(dl: Downlink) -> None:
    dl.handle(topics.DENY_SNAPSHOT, snap(2, TOK[:2]))
    refusals = {
        Reason.UNSIGNED: (topics.DENY_SNAPSHOT,
                          encode(DenyListSnapshot(version=9, issued_at=T0, tokens=[]))),
        Reason.UNKNOWN_KEY: (topics.DENY_SNAPSHOT, Signer(generate_signing_key()).sign(
            DenyListSnapshot(version=9, issued_at=T0, tokens=[]))),
        Reason.WRONG_TOPIC: ("tapsim/v1/denylist/other", snap(9, [])),
        Reason.WRONG_KIND: (topics.DENY_DELTA, snap(9, [])),
        Reason.INVALID: (topics.DENY_DELTA, delta(2, 3, add=[TOK[0]], remove=[TOK[0]])),
        Reason.MALFORMED: (topics.DENY_DELTA, b"\x93\x01\x02"),
    }
    for reason, (topic, payload) in refusals.items():
        assert dl.handle(topic, payload) is reason
    assert dl.deny_list.version == 2 and dl.deny_list.tokens() == set(TOK[:2])
    assert sum(dl.stats.rejected.values()) == len(refusals)


def test_fare_version(dl: Downlink) -> None:
    msg = FareTableVersion(version=4, table_id="city-2026", sha256=bytes(32),
                           effective_from=T0, issued_at=T0)
    assert dl.handle(topics.FARE_VERSION, SIGN(msg)) is None
    assert dl.handle(topics.FARE_VERSION, SIGN(msg)) is Reason.STALE
    again = Downlink(Verifier(KEY.public_key()), dl.store)
    assert (again.fare_version, again.fare_table_id) == (4, "city-2026")


def test_memory_changes_only_after_the_store(dl: Downlink, monkeypatch: pytest.MonkeyPatch) -> None:
    dl.handle(topics.DENY_SNAPSHOT, snap(1, [TOK[1]]))

    def broken(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(dl.store, "save_deny_delta", broken)
    with pytest.raises(OSError):
        dl.handle(topics.DENY_DELTA, delta(1, 2, add=[TOK[2]]))
    assert dl.deny_list.version == 1 and dl.deny_list.tokens() == {TOK[1]}
