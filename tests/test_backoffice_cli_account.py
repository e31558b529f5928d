"""`tapsim card issue` and `tapsim account ...`: the bank branch of a database, through the
whole lifecycle, into a replay, and a clear exit-2 message for every bad request."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from backoffice.storage import open_store, sqlite_url
from tapsim.cli import main

AT = "2025-03-01T10:00:00+08:00"


@pytest.fixture
def db(tmp_path: Path) -> str:
    return sqlite_url(tmp_path / 'bank.db')


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    data = json.loads(out) if code == 0 and "--json" in args else out
    return code, data, err


def ok(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    code, data, err = cli(capsys, *args)
    assert code == 0, err
    return data


def fails(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code, _, err = cli(capsys, *args)
    assert code == 2, err
    assert err.startswith("tapsim: error: ") and "Traceback" not in err
    return err


def test_a_card_through_its_whole_lifecycle(capsys: pytest.CaptureFixture[str], db: str) -> None:
    card = ["--db", db, "--card", "unionpay-debit", "--json"]
    issued = ok(capsys, "card", "issue", "--db", db, "--profile", "unionpay-debit", "--balance",
                "1000", "--at", AT, "--json")  # fmt: skip
    assert issued["state"] == "not_activated" and issued["masked_pan"] == "622202*********0018"
    assert issued["account"]["balance"] == 1000 and issued["bank"] == "ICBC"
    token = issued["token"]
    assert ok(capsys, "account", "activate", *card, "--at", AT)["state"] == "active"
    dep = ok(capsys, "account", "deposit", *card, "--amount", "500", "--at", AT)
    assert dep["account"]["balance"] == 1500
    lost = ok(capsys, "account", "lost", "--db", db, "--card", token, "--json", "--at", AT)
    assert lost["state"] == "lost" and lost["state_before_lost"] == "active"
    assert ok(capsys, "account", "unfreeze", *card, "--at", AT)["state"] == "active"
    assert ok(capsys, "account", "seal", *card, "--at", AT)["state"] == "sealed"
    assert ok(capsys, "account", "activate", *card, "--at", AT)["state"] == "active"
    err = fails(capsys, "account", "dormant", *card, "--at", "2025-06-01T00:00:00+08:00")
    assert "cannot go_dormant a card that is active: account moved recently" in err
    assert ok(capsys, "account", "dormant", *card,
              "--at", "2026-03-02T00:00:00+08:00")["state"] == "dormant"  # fmt: skip
    assert ok(capsys, "account", "restore", *card, "--at", "2026-03-03T00:00:00+08:00")[
        "state"] == "active"  # fmt: skip
    err = fails(capsys, "account", "expire", *card, "--at", AT)
    assert "expiry date not reached" in err
    replaced = ok(capsys, "account", "replace", *card, "--new-profile", "unionpay-debit",
                  "--new-pan", "6222020000000000042", "--reason", "damage", "--at", AT)  # fmt: skip
    assert replaced["old"]["state"] == "replaced"
    assert replaced["old"]["replacement"]["same_bank"] is True
    new = replaced["new"]
    assert new["state"] == "not_activated" and new["masked_pan"] == "622202*********0042"
    moved = ok(capsys, "account", "confirm-transfer", *card, "--at", AT)
    assert moved["account"]["status"] == "closed" and moved["replacement"]["balance_moved"]
    shown = ok(capsys, "account", "show", "--db", db, "--card", new["token"], "--json")
    assert shown["account"]["balance"] == 1500  # the old balance moved to the new card
    assert shown["back_office"] == {"deny_listed": False, "deny_reason": None, "debts": []}
    cancelled = ok(capsys, "account", "cancel", "--db", db, "--card", new["token"], "--json",
                   "--at", AT)  # fmt: skip
    assert cancelled["state"] == "cancelled" and cancelled["account"]["status"] == "closed"
    # The human form names the card by its mask only.
    out = ok(capsys, "account", "show", "--db", db, "--card", "unionpay-debit")
    assert "622202*********0018" in out and "6222020000000000018" not in out
    assert "replaced    by" in out


def test_issued_cards_are_used_by_a_replay(capsys: pytest.CaptureFixture[str], db: str,
                                          tmp_path: Path) -> None:  # fmt: skip
    ok(capsys, "card", "issue", "--db", db, "--profile", "unionpay-debit", "--balance", "500",
       "--at", AT)  # fmt: skip
    taps = tmp_path / "t.csv"
    header = "tap_id,card,time,stop_id,route_id,action,rider_category,fare_media\n"
    taps.write_text(header + "m1,unionpay-debit,2025-03-03T08:00:00+08:00,S01,1,on,,cemv\n")
    replay = ["backoffice", "replay", "--feed", "city", "--cards", "unionpay-debit", "--db", db,
              "--json"]  # fmt: skip
    r = ok(capsys, *replay, "--taps", str(taps))
    assert [(d["kind"], d["code"]) for d in r["declines"]] == [
        ("account_verification", "78"), ("resubmission", "78"),
    ]  # the card was issued but never activated  # fmt: skip
    assert r["cards"][0]["issued"] is False and r["cards"][0]["deny_listed"]
    shown = ok(capsys, "account", "show", "--db", db, "--card", "unionpay-debit", "--json")
    assert shown["back_office"]["deny_listed"] and shown["back_office"]["deny_reason"] == "78"
    assert [d["amount"] for d in shown["back_office"]["debts"]] == [200]
    assert {a["code"] for a in shown["recent_authorizations"]} == {"78"}
    ok(capsys, "account", "activate", "--db", db, "--card", "unionpay-debit",
       "--at", "2025-03-04T09:00:00+08:00")  # fmt: skip
    taps.write_text(header + "t1,unionpay-debit,2025-03-04T10:00:00+08:00,S01,1,on,,cemv\n")
    r = ok(capsys, *replay, "--taps", str(taps))
    assert [(x["debt"], x["by"]) for x in r["recoveries"]] == [("A:m1", "tap")]
    assert [d["op"] for d in r["deny_list"]] == ["remove"]
    assert [c["amount"] for c in r["charges"]] == [200]
    assert r["cards"][0]["balance_after"] == 500 - 200 - 200


def test_banks_a_replay_defined_are_known_to_later_commands(
    capsys: pytest.CaptureFixture[str], db: str, tmp_path: Path
) -> None:
    cards = tmp_path / "cards.toml"
    cards.write_text('[banks.TOWN]\nexpiry = "keep"\n[cards.u]\nprofile = "unionpay-debit"\n'
                     'bank = "TOWN"\n')  # fmt: skip
    taps = tmp_path / "t.csv"
    taps.write_text("tap_id,card,time,stop_id,route_id,action\n"
                    "a,u,2025-03-03T08:00:00+08:00,S01,1,on\n")  # fmt: skip
    ok(capsys, "backoffice", "replay", "--feed", "city", "--taps", str(taps), "--cards",
       str(cards), "--db", db, "--json")  # fmt: skip
    shown = ok(capsys, "account", "show", "--db", db, "--card", "unionpay-debit", "--json")
    assert shown["bank"] == "TOWN"
    issued = ok(capsys, "card", "issue", "--db", db, "--profile", "sscard3", "--bank", "TOWN",
                "--json")  # fmt: skip
    assert issued["bank"] == "TOWN"


def test_keys_stay_wrapped_and_a_wrong_kek_is_refused_by_the_issuer(
    capsys: pytest.CaptureFixture[str], db: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TAPSIM_KEK", "00" * 32)
    ok(capsys, "card", "issue", "--db", db, "--profile", "unionpay-debit", "--activate",
       "--balance", "5000", "--at", AT)  # fmt: skip
    store = open_store(db)
    try:
        raw = json.dumps(store._query("SELECT * FROM iss_cards"))
    finally:
        store.close()
    assert "6222020000000000018" not in raw  # neither the PAN ...
    monkeypatch.setenv("TAPSIM_KEK", "11" * 16)  # ... nor a usable key without the KEK
    taps = tmp_path / "t.csv"
    taps.write_text("tap_id,card,time,stop_id,route_id,action\n"
                    "a,unionpay-debit,2025-03-03T08:00:00+08:00,S01,1,on\n")  # fmt: skip
    r = ok(capsys, "backoffice", "replay", "--feed", "city", "--taps", str(taps), "--cards",
           "unionpay-debit", "--db", db, "--json")  # fmt: skip
    av = [(d["kind"], d["code"]) for d in r["declines"] if d["request"].startswith("av:")]
    assert av == [("account_verification", "96")]  # system malfunction: the key won't unwrap


def test_bad_branch_requests(capsys: pytest.CaptureFixture[str], db: str,
                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    ok(capsys, "card", "issue", "--db", db, "--profile", "unionpay-debit", "--at", AT)
    err = fails(capsys, "card", "issue", "--db", db, "--profile", "unionpay-debit")
    assert "card 622202*********0018 is already issued here" in err
    err = fails(capsys, "card", "issue", "--db", db, "--profile", "sscard3", "--bank", "NOPE")
    assert "no bank 'NOPE' at this issuer" in err
    err = fails(capsys, "card", "issue", "--db", db, "--profile", "sscard3", "--pan", "1234")
    assert "--pan: PAN must be 12-19 digits" in err
    err = fails(capsys, "card", "issue", "--db", db, "--profile", "sscard3", "--currency", "yen")
    assert "--currency 'yen' is not an ISO 4217 currency code" in err
    err = fails(capsys, "card", "issue", "--db", db, "--profile", "no-such-card")
    assert "no such built-in card" in err
    err = fails(capsys, "account", "show", "--db", db, "--card", "sscard3")
    assert "no card 'sscard3' in sqlite://" in err
    err = fails(capsys, "account", "show", "--db", db, "--card", "0" * 32)
    assert "no card '00000000000000000000000000000000'" in err
    err = fails(capsys, "account", "unfreeze", "--db", db, "--card", "unionpay-debit")
    assert "unfreeze: card 622202*********0018: cannot unfreeze a card that is not_activated" \
        in err
    err = fails(capsys, "account", "confirm-transfer", "--db", db, "--card", "unionpay-debit")
    assert "not replaced" in err
    err = fails(capsys, "account", "replace", "--db", db, "--card", "unionpay-debit",
                "--new-profile", "sscard3-sm")  # fmt: skip
    assert "the new card makes sm4 cryptograms, the old one tdes" in err
    err = fails(capsys, "account", "replace", "--db", db, "--card", "unionpay-debit",
                "--new-profile", "sscard3", "--reason", "renewal")  # fmt: skip
    assert "renewal opens 60 days before expiry" in err
    err = fails(capsys, "account", "activate", "--db", db, "--card", "unionpay-debit",
                "--at", "2025-03-01 10:00")  # fmt: skip
    assert "--at '2025-03-01 10:00' has no UTC offset" in err
    err = fails(capsys, "account", "show", "--db", "sqlite://relative.db", "--card", "x")
    assert "names a host 'relative.db': write sqlite:///relative/path.db" in err
    monkeypatch.setenv("TAPSIM_KEK", "not hex")
    err = fails(capsys, "card", "issue", "--db", db, "--profile", "sscard3")
    assert "TAPSIM_KEK must be hex" in err
    with pytest.raises(SystemExit):  # argparse: a reason it does not know
        main(["account", "replace", "--db", db, "--card", "x", "--new-profile", "y",
              "--reason", "boredom"])  # fmt: skip
    assert "invalid choice: 'boredom'" in capsys.readouterr().err


def test_the_database_defaults_to_tapsim_db_or_tapsim_db_env(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    ok(capsys, "card", "issue", "--profile", "unionpay-debit", "--at", AT)
    assert (tmp_path / "tapsim.db").exists()
    monkeypatch.setenv("TAPSIM_DB", str(tmp_path / "other.db"))
    ok(capsys, "card", "issue", "--profile", "unionpay-debit", "--at", AT)  # a fresh database
    assert (tmp_path / "other.db").exists()
