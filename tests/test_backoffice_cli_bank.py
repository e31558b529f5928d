"""`tapsim account` as the bank's counter: deposit, withdraw and transfer with request ids,
the journal reconciled by `tapsim account reconcile` (SQLite and PostgreSQL), the state the
bank acts on in `account show`, the lifecycle rules at their boundary days, and amounts out
of range refused with one line naming the argument."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backoffice.storage import open_store
from tapsim.cli import main
from tests.core_fixtures import BACKENDS, fresh_db_url

AT = "2025-03-01T10:00:00+08:00"
OLD = ["--card", "unionpay-debit"]
NEW_PAN = "6222020000000000042"


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    for url in fresh_db_url(request.param, tmp_path):
        open_store(url).close()  # SQLite too: a tapsim database before the commands run
        yield url


@pytest.fixture
def sqlite_db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'bank.db'}"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    data = json.loads(out) if code in (0, 1) and "--json" in args else out
    return code, data, err


def ok(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    code, data, err = run(capsys, *args)
    assert code == 0, err
    return data


def fails(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code, _, err = run(capsys, *args)
    assert code == 2, err
    assert err.startswith("tapsim: error: ") and "Traceback" not in err
    return err


def issue(capsys: pytest.CaptureFixture[str], db: str, *extra: str) -> dict[str, Any]:
    return dict(ok(capsys, "card", "issue", "--db", db, "--profile", "unionpay-debit",
                   "--activate", "--at", AT, "--json", *extra))  # fmt: skip


def test_counter_money_is_journaled_and_reconciles(capsys: pytest.CaptureFixture[str],
                                                   db: str) -> None:  # fmt: skip
    card = ["--db", db, *OLD, "--json", "--at", AT]
    issue(capsys, db, "--balance", "1000")
    dep = ok(capsys, "account", "deposit", *card, "--amount", "500", "--request-id", "b7:1")
    assert dep["account"]["balance"] == 1500
    again = ok(capsys, "account", "deposit", *card, "--amount", "500", "--request-id", "b7:1")
    assert again["repeated"] and again["account"]["balance"] == 1500  # moved once
    err = fails(capsys, "account", "deposit", *card, "--amount", "501", "--request-id", "b7:1")
    assert "--request-id 'b7:1' was already used for another account or amount" in err
    assert ok(capsys, "account", "withdraw", *card, "--amount", "200")["account"]["balance"] \
        == 1300
    err = fails(capsys, "account", "withdraw", *card, "--amount", "1301")
    assert "withdraw: account 'acct-" in err and "1300 available" in err
    # Replaced at another bank: the holder takes part of the old balance in cash, moves the
    # rest to the new card; the emptied old account closes at once.
    rep = ok(capsys, "account", "replace", *card, "--new-profile", "unionpay-debit",
             "--new-pan", NEW_PAN, "--bank", "BOC", "--reason", "loss")  # fmt: skip
    new_token = rep["new"]["token"]
    assert rep["old"]["account"]["status"] == "open" and rep["old"]["payment_code"] == "04"
    ok(capsys, "account", "withdraw", *card, "--amount", "300")
    moved = ok(capsys, "account", "transfer", *card, "--to", new_token, "--request-id", "t1")
    assert moved["amount"] == 1000 and moved["to"]["account"]["balance"] == 1000
    assert moved["from"]["account"]["status"] == "closed"
    assert moved["from"]["payment_code"] == "04"  # a replaced card, not 46
    err = fails(capsys, "account", "transfer", *card, "--to", new_token)
    assert "transfer: account 'acct-" in err and "is closed" in err
    result = ok(capsys, "account", "reconcile", "--db", db, "--json")
    assert result["ok"] and result["mismatches"] == [] and result["accounts"] == 2
    assert result["bank_side"] == {"cash:ICBC": 1000 + 500 - 200 - 300}
    out = ok(capsys, "account", "reconcile", "--db", db)
    assert out.splitlines()[-1] == ("OK: 2 account(s), 5 journal row(s): balances and holds "
                                    "equal the journal rows")  # fmt: skip
    # A balance changed behind the journal's back is found, exit 1.
    store = open_store(db)
    try:
        with store._transaction():
            store._execute("UPDATE iss_accounts SET balance = 77700 WHERE balance = 1000")
    finally:
        store.close()
    code, data, _ = run(capsys, "account", "reconcile", "--db", db)
    assert code == 1
    assert "77700 stored, 1000 from the journal rows" in data
    assert data.splitlines()[-1].startswith("MISMATCH (1): 2 account(s)")


def test_other_bank_old_account_closes_on_the_last_grace_day(
    capsys: pytest.CaptureFixture[str], sqlite_db: str
) -> None:
    db = sqlite_db
    issue(capsys, db, "--balance", "800", "--bank", "BOC")  # BOC: 30 days of grace
    rep = ok(capsys, "account", "replace", "--db", db, *OLD, "--json", "--at", AT,
             "--new-profile", "unionpay-debit", "--new-pan", NEW_PAN, "--bank", "ICBC")
    new = ["--db", db, "--card", rep["new"]["token"], "--json"]
    day_before = "2025-03-30T10:00:00+08:00"
    grace_day = "2025-03-31T10:00:00+08:00"
    shown = ok(capsys, "account", "show", "--db", db, *OLD, "--json", "--at", day_before)
    assert shown["account"]["status"] == "open" and shown["due_closings"] == []
    assert "its account closes on 2025-03-31 (grace 30 days)" in shown["why"]
    ok(capsys, "account", "activate", *new, "--at", day_before)  # any branch work: not due yet
    assert ok(capsys, "account", "show", *new, "--at", day_before)["account"]["balance"] == 0
    shown = ok(capsys, "account", "show", "--db", db, *OLD, "--json", "--at", grace_day)
    assert shown["account"]["status"] == "closed" and shown["due_closings"]  # shown as due
    ok(capsys, "account", "sweep", "--db", db, "--at", grace_day)
    after = ok(capsys, "account", "show", "--db", db, *OLD, "--json",
               "--at", "2025-06-01T10:00:00+08:00")  # three months later
    assert after["account"]["status"] == "closed" and after["account"]["balance"] == 0
    assert after["payment_code"] == "04" and after["due_closings"] == []
    assert ok(capsys, "account", "show", *new)["account"]["balance"] == 800
    assert ok(capsys, "account", "reconcile", "--db", db, "--json")["ok"]


def test_show_prints_the_state_the_bank_acts_on(capsys: pytest.CaptureFixture[str],
                                                sqlite_db: str) -> None:  # fmt: skip
    db = sqlite_db
    issue(capsys, db)  # ICBC: dormant after 365 days without movement; activated at AT
    card = ["--db", db, *OLD]
    for at, state, code in [("2026-02-28T10:00:00+08:00", "active", "00"),
                            ("2026-03-01T10:00:00+08:00", "dormant", "57"),
                            ("2026-03-02T10:00:00+08:00", "dormant", "57")]:  # fmt: skip
        shown = ok(capsys, "account", "show", *card, "--json", "--at", at)
        assert (shown["state"], shown["effective_state"], shown["payment_code"]) == (
            "active", state, code)
    text = ok(capsys, "account", "show", *card, "--at", "2026-03-02T10:00:00+08:00")
    assert "state       active since 2025-03-01T02:00:00+00:00 (stored)" in text
    assert ("acts as     dormant at 2026-03-02T10:00:00: no account movement since "
            "2025-03-01 (366 days; bank ICBC makes an account dormant after 365 days)") in text
    assert "payment     57 transaction not permitted to cardholder (dormant account)" in text
    restored = ok(capsys, "account", "restore", *card, "--json",
                  "--at", "2026-03-02T10:00:00+08:00")  # stored active: not refused
    assert (restored["effective_state"], restored["payment_code"]) == ("active", "00")
    err = fails(capsys, "account", "restore", *card, "--at", "2026-03-02T11:00:00+08:00")
    assert "restore: card 622202*********0018: cannot restore a card that is active" in err
    late = ok(capsys, "account", "show", *card, "--json", "--at", "2029-07-01T00:00:00+08:00")
    assert (late["effective_state"], late["payment_code"]) == ("expired", "54")
    assert "2029-06-30 was its last day" in late["why"] and "expiry policy stop" in late["why"]


@pytest.mark.parametrize(("at", "allowed"), [("2029-04-30T23:30:00+08:00", False),
                                             ("2029-05-01T00:30:00+08:00", True),
                                             ("2029-05-02T12:00:00+08:00", True)])
def test_renewal_opens_on_the_sixtieth_day_before_the_last_valid_day(
    capsys: pytest.CaptureFixture[str], sqlite_db: str, at: str, allowed: bool
) -> None:
    issue(capsys, sqlite_db)  # unionpay-debit: valid through 2029-06-30
    args = ["account", "replace", "--db", sqlite_db, *OLD, "--new-profile", "unionpay-debit",
            "--new-pan", NEW_PAN, "--reason", "renewal", "--at", at]
    if allowed:
        ok(capsys, *args)
    else:
        err = fails(capsys, *args)
        assert ("renewal opens 60 days before expiry (on 2029-05-01, the card's last day "
                "being 2029-06-30)") in err


@pytest.mark.parametrize(("argv", "low"), [
    (["card", "issue", "--profile", "unionpay-debit", "--balance"], 0),
    (["account", "deposit", *OLD, "--amount"], 1),
    (["account", "withdraw", *OLD, "--amount"], 1),
    (["account", "transfer", *OLD, "--to", "sscard3", "--amount"], 1),
    (["account", "replace", *OLD, "--new-profile", "sscard3", "--balance"], 0),
])
def test_huge_amounts_are_one_line_naming_the_argument(
    capsys: pytest.CaptureFixture[str], sqlite_db: str, argv: list[str], low: int
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*argv[:2], "--db", sqlite_db, *argv[2:], str(10**20)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[-1].endswith(
        f"error: argument {argv[-1]}: 100000000000000000000 is out of range: {low} to "
        "999,999,999,999 minor units")


def test_a_huge_balance_in_a_cards_file_names_the_file_and_field(
    capsys: pytest.CaptureFixture[str], sqlite_db: str, tmp_path: Path
) -> None:
    cards = tmp_path / "cards.toml"
    cards.write_text(f'[cards.u]\nprofile = "unionpay-debit"\nbalance = {10**20}\n')
    taps = tmp_path / "t.csv"
    taps.write_text("tap_id,card,time,stop_id,route_id,action\n"
                    "a,u,2025-03-03T08:00:00+08:00,S01,1,on\n")  # fmt: skip
    err = fails(capsys, "backoffice", "replay", "--feed", "city", "--taps", str(taps),
                "--cards", str(cards), "--db", sqlite_db)  # fmt: skip
    assert err == (f"tapsim: error: {cards}: cards.u.balance: 100000000000000000000 is out of "
                   "range: 0 to 999,999,999,999 minor units\n")
