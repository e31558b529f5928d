"""Branch work while a core runs (issue 15): a card reported lost and a 777.00 deposit at the
branch between the core's load and its commit are never overwritten by the core's stale copy.

The core's commit checks the issuer's change mark under the issuer lock the branch also takes;
a moved mark rolls the commit back and the batch is done again on a fresh load.  Each runner
is tested with a branch write injected at the worst moment (after its decisions, before its
commit), on SQLite and PostgreSQL: the transaction core (`tapsim backoffice run`'s writer),
`tapsim backoffice replay`, and the issuer host (`tapsim issuer run`).  The streaming races,
with `tapsim backoffice run` as a process and a real broker, are in
test_backoffice_branch_race_live.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from backoffice.service import TransactionCore
from backoffice.storage import SqlStore, open_store
from issuer.models import Card
from tapsim.cli import main
from tests.core_fixtures import (
    BACKENDS,
    BANKS,
    KEK,
    T0,
    TOKEN_KEY,
    TestCard,
    config,
    flat_pricer,
    fresh_db_url,
    keystore,
    make_store,
    new_issuer,
    open_card,
    pan_for,
)

ROOT = Path(__file__).resolve().parents[1]
DEPOSIT = 77_700  # 777.00


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[SqlStore, str]]:
    yield from make_store(request.param, tmp_path)


@pytest.fixture(params=BACKENDS)
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each backend (PostgreSQL: a schema of its own, dropped after)."""
    yield from fresh_db_url(request.param, tmp_path)


def branch(capsys: pytest.CaptureFixture[str], url: str, action: str, card: str,
           *extra: str) -> dict[str, Any]:
    """`tapsim account ACTION` (in process: the command the user runs, its own connection)."""
    capsys.readouterr()
    code = main(["account", action, "--db", url, "--card", card, "--json", *extra])
    out, err = capsys.readouterr()
    assert code == 0, err
    result: dict[str, Any] = json.loads(out)
    return result


def card_of(store: SqlStore, token: str) -> Card:
    return {c.pan_token: c for c in store.load_issuer().cards}[token]


def balance_of(store: SqlStore, token: str) -> tuple[int, int]:
    """(balance, captured) of the card's account, as the database holds them."""
    account_id = card_of(store, token).account_id
    account = {a.account_id: a for a in store.load_issuer().accounts}[account_id]
    captured = sum(c.amount for c in store.captures() if c.account_id == account_id)
    return account.balance, captured


# -- the transaction core ----------------------------------------------------------------------


def test_a_branch_write_between_the_cores_decision_and_commit_is_kept(
        store_url: tuple[SqlStore, str], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """x pays a closing aggregate (its account row is written by the batch); y, active when the
    core loaded, is reported lost before the commit.  The commit conflicts, the batch is done
    again: the deposit is in x's balance, y's first tap is declined 41 and y stays lost."""
    store, url = store_url
    monkeypatch.setenv("TAPSIM_TOKEN_KEY", TOKEN_KEY.hex())
    monkeypatch.setenv("TAPSIM_KEK", KEK.hex())
    issuer = new_issuer()
    x, y = TestCard(pan_for(1)), TestCard(pan_for(2))
    open_card(issuer, x, balance=10_000)
    open_card(issuer, y, balance=10_000)
    store.save_issuer(issuer.drain_changes())
    core = TransactionCore(store, flat_pricer(), keystore(), BANKS, TOKEN_KEY,
                           config(spend_limit=300))
    core.ingest([x.tap("x1", T0)], T0)  # x's aggregate opens, verified
    at = (T0 + timedelta(minutes=5)).isoformat()
    real_commit = store.commit
    fired: list[int] = []

    def commit_after_the_branch(*args: Any, **kw: Any) -> None:
        if not fired:  # the core has decided the batch in memory: now the branch writes
            fired.append(branch(capsys, url, "deposit", x.token, "--amount", str(DEPOSIT),
                                "--at", at)["account"]["balance"])
            assert branch(capsys, url, "lost", y.token, "--at", at)["state"] == "lost"
        real_commit(*args, **kw)

    monkeypatch.setattr(store, "commit", commit_after_the_branch)
    later = T0 + timedelta(minutes=10)
    result = core.ingest([x.tap("x2", later), y.tap("y1", later + timedelta(seconds=1))],
                         later + timedelta(minutes=1))
    assert fired == [10_000 + DEPOSIT]
    assert result.accepted == 2
    codes = {(e.kind, e.code) for e in result.events if e.masked_pan == y.masked}
    assert ("deny_add", "41") in codes, result.events

    check = open_store(url)  # what another process sees
    try:
        balance, captured = balance_of(check, x.token)
        assert captured == 400  # x's aggregate closed over the spend limit in that batch
        assert balance == 10_000 + DEPOSIT - captured
        assert card_of(check, y.token).state.value == "lost"
        y_auths = [r for r in check._query("SELECT code FROM iss_auths WHERE pan_token = ?",
                                           (y.token,))]
        assert y_auths == [("41",)]
        assert y.token in {r.pan_token for r in check.deny_list()}
        assert core.reconcile().ok
    finally:
        check.close()
    assert core.redone == 1  # the batch was done twice, committed once


def test_a_core_without_branch_writes_commits_once(store_url: tuple[SqlStore, str]) -> None:
    """The check costs one read; nothing is redone when no one else wrote."""
    store, _ = store_url
    issuer = new_issuer()
    x = TestCard(pan_for(3))
    open_card(issuer, x)
    store.save_issuer(issuer.drain_changes())
    core = TransactionCore(store, flat_pricer(), keystore(), BANKS, TOKEN_KEY, config())
    for k in range(3):
        core.ingest([x.tap(f"x{k}", T0 + timedelta(minutes=k))], T0 + timedelta(minutes=k))
    assert core.redone == 0 and store.count("taps") == 3


def test_a_branch_operation_waits_for_a_held_issuer_and_sees_its_commit(
        store_url: tuple[SqlStore, str]) -> None:
    """The lock both sides take: a branch command (a real process) started while the core
    holds the issuer waits, then reads what the core committed, so the core's write is not
    overwritten by the branch either."""
    store, url = store_url
    issuer = new_issuer()
    x = TestCard(pan_for(4))
    account = open_card(issuer, x, balance=10_000).account_id
    store.save_issuer(issuer.drain_changes())
    env = {**os.environ, "TAPSIM_TOKEN_KEY": TOKEN_KEY.hex(), "PYTHONPATH": str(ROOT)}
    with store.issuer_held():
        proc = subprocess.Popen(
            [sys.executable, "-m", "tapsim.cli", "account", "deposit", "--db", url, "--card",
             x.token, "--amount", str(DEPOSIT), "--json"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=2.0)
        assert proc.poll() is None, "the branch did not wait for the held issuer"
        # What a core writes while it holds the issuer: 300 captured from x's account.
        store._execute("UPDATE iss_accounts SET balance = balance - 300 WHERE account_id = ?",
                       (account,))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert json.loads(out)["account"]["balance"] == 10_000 - 300 + DEPOSIT


# -- a replay ------------------------------------------------------------------------------------

REPLAY_CARDS = """
[cards.ann]
profile = "unionpay-debit"
balance = 5000

[cards.ben]
profile = "unionpay-debit"
pan = "6222020000000000026"
balance = 5000
"""


def test_a_branch_write_during_a_replay_is_kept(
        fresh_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`tapsim backoffice replay`, one tap a transaction; before the commit of Monday's third
    tap the branch takes a 777.00 deposit for ann and a loss report for ben.  The replay never
    reloads by itself: without the check its day-end charges would write ann's balance from
    before the deposit and approve ben's charge.  Here the commit conflicts and is redone:
    ann keeps the deposit, ben's charge is declined 41, the report counts each tap once."""
    from emv.pan import pan_token
    from tapsim.commands.tap import token_key

    cards = tmp_path / "cards.toml"
    cards.write_text(REPLAY_CARDS)
    rows = ["tap_id,card,time,stop_id,route_id,action,rider_category,fare_media"]
    rows += [f"{c}{k},{name},2025-03-03T{8 + k:02d}:0{i}:00+08:00,S01,1,on,,cemv"
             for k in range(3) for i, (c, name) in enumerate((("a", "ann"), ("b", "ben")))]
    taps = tmp_path / "taps.csv"
    taps.write_text("\n".join(rows) + "\n")
    ben = pan_token("6222020000000000026", token_key())
    real_commit = SqlStore.commit
    commits: list[int] = []

    def commit_after_the_branch(self: SqlStore, *args: Any, **kw: Any) -> None:
        commits.append(1)
        if len(commits) == 4:  # issue, a0, b0, then a1 decided: the branch writes now
            at = "2025-03-03T08:30:00+08:00"
            branch(capsys, fresh_url, "deposit", "unionpay-debit", "--amount", str(DEPOSIT),
                   "--at", at)
            branch(capsys, fresh_url, "lost", ben, "--at", at)
        real_commit(self, *args, **kw)

    monkeypatch.setattr(SqlStore, "commit", commit_after_the_branch)
    capsys.readouterr()
    code = main(["backoffice", "replay", "--feed", "city", "--taps", str(taps), "--cards",
                 str(cards), "--db", fresh_url, "--batch", "1", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    monkeypatch.undo()
    r = json.loads(out)
    assert r["counts"]["accepted"] == 6 and len(r["cards"]) == 2
    charges = {c["card"]: c["amount"] for c in r["charges"]}
    declines = {(d["card"], d["kind"], d["code"]) for d in r["declines"]}
    assert ("ben", "deferred", "41") in declines and "ben" not in charges
    after = {c["card"]: c for c in r["cards"]}
    assert charges["ann"] > 0
    assert after["ann"]["balance_after"] == 5000 + DEPOSIT - charges["ann"]
    assert r["reconciliation"]["ok"]
    check = open_store(fresh_url)
    try:
        assert card_of(check, ben).state.value == "lost"
    finally:
        check.close()


# -- the issuer host -----------------------------------------------------------------------------


class _Conn:
    """Where the host sends a batch's answers (stands in for a TCP connection)."""

    peer = "test"

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sent.append(data)


def test_a_branch_write_during_an_issuer_host_batch_is_kept(
        fresh_url: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`tapsim issuer run`'s processor: a batch holds sscard3's 100.00 and verifies
    sscard3-sm; the branch deposits 777.00 on sscard3 and reports sscard3-sm lost before the
    batch's commit.  The commit conflicts; the batch is answered again on a fresh load: the
    deposit stays, sscard3-sm is refused 41, and each request is answered once."""
    from backoffice.branch import key_store
    from emv.card.profile import load_profile
    from isolink.framing import FrameReader
    from isolink.taps import CardTapper
    from issuer.service import Issuer
    from issuerhost.host import IssuerHost
    from tapsim.commands.backoffice import db_banks, kek
    from tapsim.commands.tap import token_key
    from tests.iso8583_support import DIALECT, authorization, issue, token

    issue(fresh_url, "sscard3", balance=10_000)
    issue(fresh_url, "sscard3-sm", balance=10_000)
    store = open_store(fresh_url)
    try:
        banks = db_banks(store)

        def load(floor: object = None) -> Issuer:  # no retention: every record
            return Issuer(key_store(kek()), banks, token_key(), store.load_issuer())

        logs: list[str] = []
        host = IssuerHost(store, load, DIALECT, log=logs.append)
        real_save = store.save_issuer
        fired: list[bool] = []

        def save_after_the_branch(*args: Any, **kw: Any) -> str:
            if not fired:
                fired.append(True)
                branch(capsys, fresh_url, "deposit", "sscard3", "--amount", str(DEPOSIT))
                branch(capsys, fresh_url, "lost", "sscard3-sm")
            return real_save(*args, **kw)

        monkeypatch.setattr(store, "save_issuer", save_after_the_branch)
        conn = _Conn()
        batch = [authorization(CardTapper(load_profile("sscard3")), token("sscard3"),
                               amount=10_000),
                 authorization(CardTapper(load_profile("sscard3-sm")), token("sscard3-sm"))]
        host._run([(fields, conn) for fields in batch])  # type: ignore[misc]
        answers = [DIALECT.decode(m) for data in conn.sent
                   for m in FrameReader().receive_data(data)]
        assert [(a["11"], a["39"]) for a in answers] == [(batch[0]["11"], "00"),
                                                         (batch[1]["11"], "41")]
        assert host.stats.redone == 1 and host.stats.batches == 1
        assert any("batch answered again" in line for line in logs)
        monkeypatch.undo()
        check = open_store(fresh_url)
        try:
            tok = token("sscard3")
            account_id = card_of(check, tok).account_id
            account = {a.account_id: a for a in check.load_issuer().accounts}[account_id]
            assert (account.balance, account.held) == (10_000 + DEPOSIT, 10_000)
            assert card_of(check, token("sscard3-sm")).state.value == "lost"
        finally:
            check.close()
    finally:
        store.close()


def test_a_branch_operation_kept_waiting_too_long_is_refused_with_a_message(
        store_url: tuple[SqlStore, str]) -> None:
    """The lock held past the wait (SQLite's busy timeout, PostgreSQL's lock timeout; both
    shortened here): the branch is told who may hold the database, and nothing is written."""
    from backoffice.storage import StorageError

    core, url = store_url
    branch_store = open_store(url)
    try:
        if branch_store.backend == "sqlite":
            branch_store._execute("PRAGMA busy_timeout=200")
        branch_store.hold_wait_ms = 200
        busy = r"is busy: another writer \(a running `tapsim backoffice run`.*try again"
        with core.issuer_held(), pytest.raises(StorageError, match=busy):
            branch_store.hold_issuer()
        assert branch_store.hold_issuer() == ""  # free again: taken at once
        branch_store.release_issuer()
    finally:
        branch_store.close()
