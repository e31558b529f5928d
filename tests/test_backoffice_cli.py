"""`tapsim backoffice replay`: the documented sample run (as a subprocess, on SQLite and on
PostgreSQL), every lifecycle state through the kernel and the whole core, re-runs that charge
nothing twice, and a clear exit-2 message for every bad input."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from backoffice.storage import StorageUnavailableError, open_store, sqlite_url
from tapsim.cli import main
from tests.core_fixtures import backend_url, drop_schema, pg_unavailable

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "backoffice" / "samples"


def documented_command() -> list[str]:
    """The replay command exactly as backoffice/README.md shows it."""
    text = (ROOT / "backoffice" / "README.md").read_text("utf-8")
    [line] = [ln for ln in text.splitlines()
              if ln.startswith("tapsim backoffice replay ") and "--issuer" not in ln]
    return shlex.split(line)


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    assert args[0] == "tapsim"
    return subprocess.run(
        [sys.executable, "-m", "tapsim.cli", *args[1:]], cwd=ROOT, env={**os.environ, **env},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def replay(capsys: pytest.CaptureFixture[str], db: Path | str, *args: str,
           taps: Path = SAMPLES / "taps.csv", cards: Path | str = SAMPLES / "cards.toml",
           feed: str = "city") -> tuple[int, dict[str, Any], str]:  # fmt: skip
    code = main([
        "backoffice", "replay", "--feed", feed, "--taps", str(taps), "--cards", str(cards),
        "--db", str(db), "--json", *args,
    ])  # fmt: skip
    out, err = capsys.readouterr()
    return code, json.loads(out) if code in (0, 1) else {}, err


def by_card(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["card"], []).append(r)
    return out


def check_sample_story(r: dict[str, Any]) -> None:
    """What the shipped sample shows (backoffice/README.md, "Replay")."""
    assert r["feed"] == "city" and r["currency"] == "CNY" and r["rows"] == 16
    assert r["counts"] == {"accepted": 14, "duplicates": 0, "rejected": 2,
                           "refused_by_validator": 0}  # fmt: skip
    fares = {f["tap_id"]: f for f in r["fares"]}
    assert fares["a2"]["amount"] == 100 and "transfer type 1" in fares["a2"]["why"]
    assert fares["a4"]["amount"] == -200  # the tap-off refund of the distance route
    assert fares["c1"]["amount"] == 0 and "category senior" in fares["c1"]["why"]
    assert [(c["card"], c["aggregate"], c["amount"]) for c in r["charges"]] == [
        ("alice", "A:a1", 600), ("bob", "A:b4", 200),
    ]  # fmt: skip
    declines = {(d["card"], d["kind"], d["code"]) for d in r["declines"]}
    assert ("bob", "deferred", "51") in declines
    assert ("dave", "account_verification", "41") in declines
    assert ("erin", "account_verification", "78") in declines
    assert all(d["meaning"] for d in r["declines"])
    deny = [(d["card"], d["op"]) for d in r["deny_list"]]
    assert deny == [("dave", "add"), ("erin", "add"), ("bob", "add"), ("bob", "remove")]
    assert [(x["card"], x["debt"], x["amount"], x["by"]) for x in r["recoveries"]] == [
        ("bob", "A:b1", 600, "tap"),
    ]  # fmt: skip
    assert [(x["line"], x["tap_id"], x["field"]) for x in r["rejects"]] == [
        (16, "x1", "time"), (17, "x2", "stop_id"),
    ]  # fmt: skip
    assert r["branch"] == [{
        "card": "bob", "time": "2025-03-04T09:00:00+08:00", "action": "deposit", "amount": 2000,
        "result": "balance 2300",
    }]  # fmt: skip
    cards = {c["card"]: c for c in r["cards"]}
    assert cards["alice"]["balance_after"] == 5000 - 600
    assert cards["bob"]["balance_after"] == 300 + 2000 - 600 - 200
    assert cards["dave"]["deny_listed"] and cards["erin"]["deny_listed"]
    assert not cards["bob"]["deny_listed"]
    rec = r["reconciliation"]
    assert rec["ok"] and rec["problems"] == []
    assert rec["tap_fares"] == 2000 and rec["issuer_captured"] == 1400
    assert rec["debts_in_recovery"] == 600  # dave 400 + erin 200, still being retried


# -- the documented command --------------------------------------------------------------


def test_the_documented_command_replays_the_samples_on_sqlite(tmp_path: Path) -> None:
    cmd = documented_command()
    assert cmd == [
        "tapsim", "backoffice", "replay", "--feed", "city", "--taps",
        "backoffice/samples/taps.csv", "--cards", "backoffice/samples/cards.toml",
    ]  # fmt: skip
    db = tmp_path / "demo.db"
    done = run_cli(cmd, {"TAPSIM_DB": str(db)})
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for text in ("Charges (one per aggregate)", "A:a1", "6.00", "transfer type 1",
                 "insufficient funds", "lost card", "financial function not activated",
                 "debts recovered", "tap (rec:b4)", "deposit 20.00", "unknown stop 'S99'",
                 "reconciled: taps x fares = ledger = issuer captures"):  # fmt: skip
        assert text in out, text
    assert re.search(r"taps accepted 14, duplicates 0, rejected 2", out)
    assert "backoffice/samples/taps.csv:16: time:" in done.stderr
    assert "6222020000000000026" not in out + done.stderr  # masked only
    # The same command again: every tap and branch action is already in the database.
    again = run_cli([*cmd, "--json"], {"TAPSIM_DB": str(db)})
    assert again.returncode == 0, again.stderr
    r = json.loads(again.stdout)
    assert r["counts"]["accepted"] == 0 and r["counts"]["duplicates"] == 16
    assert r["charges"] == [] and r["declines"] == [] and r["branch"] == []
    assert {c["card"]: c["balance_after"] for c in r["cards"]}["bob"] == 1500
    assert r["reconciliation"]["ok"]


def test_the_samples_replay_on_postgresql(tmp_path: Path) -> None:
    url, schema = backend_url("postgresql", tmp_path)
    assert schema is not None
    try:
        open_store(url).close()
    except StorageUnavailableError as exc:
        pg_unavailable(str(exc))
    try:
        done = run_cli([*documented_command(), "--db", url, "--json"], {})
        assert done.returncode == 0, done.stderr
        r = json.loads(done.stdout)
        assert r["db"] == url
        check_sample_story(r)
    finally:
        drop_schema(schema)


def test_the_sample_story_in_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, r, err = replay(capsys, tmp_path / "core.db")
    assert code == 0
    check_sample_story(r)
    assert "taps.csv:17: stop_id: unknown stop 'S99' (kept as a reject)" in err
    store = open_store(sqlite_url(tmp_path / 'core.db'))
    try:
        rejects = store.rejects()
        assert {r.field for r in rejects} == {"time", "stop_id"}
        assert all('"line"' in r.raw and '"row"' in r.raw for r in rejects)  # kept to inspect
        assert store.count("taps") == 14
        dump = json.dumps([store._query(f"SELECT * FROM {t}") for t in (
            "meta", "taps", "rejects", "aggregates", "debts", "deny_list", "iss_cards",
            "iss_auths", "iss_accounts")], default=str)  # fmt: skip
    finally:
        store.close()
    pans = ("6222020000000000018", "6222020000000000026", "6222020000000000034",
            "6231900000000000022", "6250940000000000016")  # fmt: skip
    assert not [p for p in pans if p in dump]  # tokens and masks only, chip state included


def test_human_output_has_the_tables(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main([
        "backoffice", "replay", "--feed", "city", "--taps", str(SAMPLES / "taps.csv"),
        "--cards", str(SAMPLES / "cards.toml"), "--db", str(tmp_path / "h.db"),
    ])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    titles = ("Cards", "Fares", "Charges", "Declines at the issuer", "Deny list",
              "Debt recovery", "At the branch", "Rejected records (kept)", "Reconciliation")
    for title in titles:
        assert title in out
    assert "av:A:d1" in out  # ids shown as they are (no emoji or markup rendering)


# -- every lifecycle state, through the kernel --------------------------------------------

STATES_CARDS = """
[banks.KEEPER]
expiry = "keep"

[cards.active]
profile = "unionpay-debit"
[cards.sealed]
profile = "unionpay-debit"
pan = "6222020000000000042"
state = "sealed"
[cards.dormant]
profile = "unionpay-debit"
pan = "6222020000000000059"
state = "dormant"
[cards.expired]
profile = "unionpay-debit"
pan = "{p1}"
state = "expired"
[cards.kept]
profile = "unionpay-debit"
pan = "{p2}"
state = "expired"
bank = "KEEPER"
[cards.cancelled]
profile = "unionpay-debit"
pan = "{p3}"
state = "cancelled"
[cards.old]
profile = "sscard3"
state = "replaced"
replaced_by = "new"
[cards.new]
profile = "sscard3"
pan = "{p4}"
"""


def luhn(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return body + str((10 - total % 10) % 10)


def test_every_lifecycle_state_answers_with_its_code(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    pans = {f"p{i}": luhn(f"62220200000000010{i}") for i in range(1, 5)}
    cards = tmp_path / "cards.toml"
    cards.write_text(STATES_CARDS.format(**pans))
    names = ["active", "sealed", "dormant", "expired", "kept", "cancelled", "old", "new"]
    rows = ["tap_id,card,time,stop_id,route_id,action,rider_category,fare_media"]
    rows += [f"{n}1,{n},2025-03-03T08:{i:02d}:00+08:00,S01,1,on,adult,cemv"
             for i, n in enumerate(names)]  # fmt: skip
    taps = tmp_path / "taps.csv"
    taps.write_text("\n".join(rows) + "\n")
    code, r, _ = replay(capsys, tmp_path / "s.db", taps=taps, cards=cards)
    assert code == 0
    av = {d["card"]: d["code"] for d in r["declines"] if d["kind"] == "account_verification"}
    assert av == {"sealed": "62", "dormant": "57", "expired": "54", "cancelled": "46",
                  "old": "04"}  # fmt: skip
    charged = {c["card"]: c["amount"] for c in r["charges"]}
    assert charged == {"active": 200, "kept": 200, "new": 200}  # KEEPER keeps expired cards
    states = {c["card"]: c["state"] for c in r["cards"]}
    assert states["old"] == "replaced" and states["new"] == "active"
    assert states["kept"] == "expired" and states["cancelled"] == "cancelled"
    assert {d["card"] for d in r["deny_list"]} == {"sealed", "dormant", "expired", "cancelled",
                                                   "old"}  # fmt: skip
    assert r["reconciliation"]["ok"]


def test_recovery_by_schedule_then_write_off_with_until(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, r, _ = replay(capsys, tmp_path / "w.db", "--until", "2025-03-20T12:00:00+08:00")
    assert code == 0
    retries = [d["request"] for d in r["declines"] if d["card"] == "dave"
               and d["request"].startswith("rs:")]  # fmt: skip
    assert retries == [f"rs:A:d1:{n}" for n in range(1, 7)]  # six retries in 14 days
    assert {(w["card"], w["amount"]) for w in r["written_off"]} == {("dave", 400), ("erin", 200)}
    rec = r["reconciliation"]
    assert rec["ok"] and rec["debts_written_off"] == 600 and rec["debts_in_recovery"] == 0


def test_a_later_replay_continues_the_chips_counters(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    header = "tap_id,card,time,stop_id,route_id,action,rider_category,fare_media\n"
    day1, day2 = tmp_path / "d1.csv", tmp_path / "d2.csv"
    day1.write_text(header + "m1,unionpay-debit,2025-03-03T08:00:00+08:00,S01,1,on,,cemv\n")
    day2.write_text(header + "t1,unionpay-debit,2025-03-04T08:00:00+08:00,S01,1,on,,cemv\n")
    db = tmp_path / "c.db"
    code, r1, _ = replay(capsys, db, taps=day1, cards="unionpay-debit")
    assert code == 0 and r1["counts"]["accepted"] == 1 and r1["cards"][0]["issued"]
    code, r2, _ = replay(capsys, db, taps=day2, cards="unionpay-debit")
    assert code == 0 and not r2["cards"][0]["issued"]  # the card from the database
    assert r2["counts"] == {"accepted": 1, "duplicates": 0, "rejected": 0,
                            "refused_by_validator": 0}  # no replayed ATC  # fmt: skip
    assert r2["declines"] == [] and [c["amount"] for c in r2["charges"]] == [200]


def test_a_card_the_kernel_refuses_never_reaches_the_core(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    base = (ROOT / "emv" / "card" / "profiles" / "unionpay-debit.toml").read_text()
    old = re.sub(r'expiry = "[0-9-]+"', 'expiry = "2024-12-31"', base)
    old = re.sub(r'effective = "[0-9-]+"', 'effective = "2020-01-01"', old)
    (tmp_path / "old.toml").write_text(old)
    (tmp_path / "cards.toml").write_text('[cards.old]\nprofile = "old.toml"\n')
    taps = tmp_path / "t.csv"
    taps.write_text("tap_id,card,time,stop_id,route_id,action\n"
                    "o1,old,2025-03-03T08:00:00+08:00,S01,1,on\n")  # fmt: skip
    code, r, _ = replay(capsys, tmp_path / "k.db", taps=taps, cards=tmp_path / "cards.toml")
    assert code == 0
    assert r["refused"] == [{"line": 2, "tap_id": "o1", "card": "old",
                             "time": "2025-03-03T08:00:00+08:00", "outcome": "declined",
                             "reason": "card-expired"}]  # fmt: skip
    assert r["counts"]["accepted"] == 0 and r["fares"] == []


def test_a_comma_list_of_built_in_cards(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    taps = tmp_path / "t.csv"
    taps.write_text("tap_id,card,time,stop_id,route_id,action,rider_category,fare_media\n"
                    "u1,unionpay-debit,2025-03-03T08:00:00+08:00,S01,1,on,,cemv\n"
                    "s1,sscard3,2025-03-03T08:00:00+08:00,S01,1,on,,cemv\n"
                    "z1,nobody,2025-03-03T08:00:00+08:00,S01,1,on,,cemv\n")  # fmt: skip
    code, r, _ = replay(capsys, tmp_path / "l.db", taps=taps, cards="unionpay-debit, sscard3")
    assert code == 0
    assert {c["card"]: c["balance"] for c in r["cards"]} == {"sscard3": 10_000,
                                                             "unionpay-debit": 10_000}  # fmt: skip
    assert [c["card"] for c in r["charges"]] == ["unionpay-debit"]  # sscard3: a senior, free
    assert r["rejects"] == [{"line": 4, "tap_id": "z1", "field": "card",
                             "reason": "no card 'nobody' in the cards file"}]  # fmt: skip


def test_a_file_of_bad_rows_only_keeps_them_all(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    taps = tmp_path / "t.csv"
    taps.write_text(
        "tap_id,card,time,stop_id,route_id,action\n"
        "x,alice,2025-03-03 08:00,S01,1,on\ny,alice,2025-03-03T08:00:00+08:00,S01\n"
    )
    code, r, err = replay(capsys, tmp_path / "b.db", taps=taps)
    assert code == 0 and r["counts"]["rejected"] == 2
    assert [(x["line"], x["tap_id"], x["field"]) for x in r["rejects"]] == [
        (2, "x", "time"), (3, None, "row"),
    ]  # fmt: skip
    assert "t.csv:3: expected 6 fields, found 4" in err


def test_harbour_settles_in_euros_and_a_city_database_refuses_them(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    taps = tmp_path / "h.csv"
    taps.write_text("tap_id,card,time,stop_id,route_id,action,rider_category,fare_media\n"
                    "h1,unionpay-debit,2025-03-04T07:40:00+01:00,B1,101,on,,cemv\n")  # fmt: skip
    code, r, _ = replay(capsys, tmp_path / "eur.db", taps=taps, cards="unionpay-debit",
                        feed="harbour")  # fmt: skip
    assert code == 0 and r["currency"] == "EUR"
    assert [c["amount"] for c in r["charges"]] == [200]
    code, _, err = replay(capsys, tmp_path / "eur.db", feed="city")
    assert code == 2 and "settles in EUR; this feed charges in CNY" in err


# -- bad input: a clear message and exit 2 ------------------------------------------------


def _bad(capsys: pytest.CaptureFixture[str], tmp_path: Path, cards_text: str | None = None,
         taps_text: str | None = None, *extra: str) -> str:  # fmt: skip
    cards: Path | str = SAMPLES / "cards.toml"
    if cards_text is not None:
        cards = tmp_path / "bad-cards.toml"
        cards.write_text(cards_text)
    taps = SAMPLES / "taps.csv"
    if taps_text is not None:
        taps = tmp_path / "bad-taps.csv"
        taps.write_text(taps_text)
    code, _, err = replay(capsys, tmp_path / "bad.db", *extra, taps=taps, cards=cards)
    assert code == 2, err
    assert "tapsim: error: " in err and "Traceback" not in err
    return err


@pytest.mark.parametrize(("cards_text", "message"), [
    ("[cards.a]\nprofile = 'unionpay-debit'\nbalance = 'lots'\n",
     r"bad-cards.toml: Expected `int`, got `str` - at `\$.cards\[...\].balance`"),
    ("[cards.a]\nprofile = 'unionpay-debit'\ncolour = 'red'\n", r"unknown field `colour`"),
    ("[cards.a\n", r"bad-cards.toml: not valid TOML"),
    ("[cards.a]\nprofile = 'nope'\n", r"cards.a.profile: nope: no such built-in card"),
    ("[cards.a]\nprofile = 'unionpay-debit'\npan = '6222020000000000027'\n",
     r"cards.a.pan: Luhn check digit is wrong"),
    ("[cards.a]\nprofile = 'unionpay-debit'\nbank = 'NOBANK'\n",
     r"cards.a.bank: no bank 'NOBANK' \(known: BOC, CCB, ICBC\)"),
    ("[cards.a]\nprofile = 'unionpay-debit'\n[cards.b]\nprofile = 'unionpay-debit'\n",
     r"cards a and b are the same card \(622202\*+0018\)"),
    ("[cards.a]\nprofile = 'unionpay-debit'\nstate = 'frozen'\n",
     r"cards.a.state: 'frozen' is not one of active, not-activated"),
    ("[cards.a]\nprofile = 'unionpay-debit'\nstate = 'replaced'\n",
     r"cards.a: state 'replaced' and replaced_by go together"),
    ("[cards.a]\nprofile = 'unionpay-debit'\n[[cards.a.events]]\n"
     "at = 2025-03-03T08:00:00+08:00\naction = 'deposit'\n",
     r"cards.a.events\[0\]: amount is for deposits, and they need one"),
    ("[cards.a]\nprofile = 'unionpay-debit'\n[[cards.a.events]]\n"
     "at = 2025-03-03T08:00:00\naction = 'lost'\n", r"Expected `datetime` with a timezone"),
    ("[banks.X]\nexpiry = 'maybe'\n[cards.a]\nprofile = 'unionpay-debit'\n",
     r"banks.X: 'maybe' is not a valid ExpiryPolicy"),
    ("[cards.a]\nprofile = 'unionpay-debit'\nstate = 'expired'\nexpires = 2026-01-01\n",
     r"card a: state 'expired' needs the bank's expiry before the first tap"),
])  # fmt: skip
def test_bad_cards_files(capsys: pytest.CaptureFixture[str], tmp_path: Path, cards_text: str,
                         message: str) -> None:  # fmt: skip
    taps = "tap_id,card,time,stop_id,route_id,action\na1,a,2025-03-03T08:00:00+08:00,S01,1,on\n"
    err = _bad(capsys, tmp_path, cards_text, taps)
    assert re.search(message, err), err


def test_bad_taps_files_feeds_and_options(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    err = _bad(capsys, tmp_path, None, "tap_id,card,time\n")
    assert "1: missing column(s) stop_id, route_id, action" in err
    err = _bad(capsys, tmp_path, None, "")
    assert "empty file" in err
    err = _bad(capsys, tmp_path, None, None, "--until", "tomorrow")
    assert "--until 'tomorrow' is not an ISO 8601 date and time" in err
    err = _bad(capsys, tmp_path, None, None, "--until", "2025-03-03T09:00:00+08:00")
    assert "is before the last tap or event" in err
    assert main(["backoffice", "replay", "--feed", "nowhere", "--taps", "t.csv", "--cards",
                 "unionpay-debit"]) == 2  # fmt: skip
    assert "no feed at 'nowhere'" in capsys.readouterr().err
    assert main(["backoffice", "replay", "--feed", "city", "--taps", str(tmp_path / "none.csv"),
                 "--cards", "unionpay-debit"]) == 2  # fmt: skip
    assert "cannot read taps file" in capsys.readouterr().err
    assert main(["backoffice", "replay", "--feed", "city", "--taps", str(SAMPLES / "taps.csv"),
                 "--cards", "unionpay-debit,", "--db", str(tmp_path / "x.db")]) == 2  # fmt: skip
    assert "an empty name in the list" in capsys.readouterr().err
    assert main(["backoffice", "replay", "--feed", "city", "--taps", str(SAMPLES / "taps.csv"),
                 "--cards", "ghost", "--db", str(tmp_path / "x.db")]) == 2  # fmt: skip
    assert "no built-in card 'ghost'" in capsys.readouterr().err
    err = _bad(capsys, tmp_path, None, None, "--db", "mysql://somewhere/db")
    assert "unsupported database URL" in err
    monkeypatch.setenv("TAPSIM_KEK", "00112233")
    err = _bad(capsys, tmp_path)
    assert "TAPSIM_KEK must be 16, 24 or 32 bytes (AES), got 4" in err


def test_the_replay_reports_progress_batch_by_batch(tmp_path: Path) -> None:
    """The library form the CLI drives (its progress bar is this callback on stderr)."""
    from backoffice.branch import TEST_KEK, key_store
    from backoffice.fare_pricer import FarePricer
    from backoffice.service import TransactionCore
    from fare.gtfs import load_feed
    from fare.samples import sample_feed_path
    from replay.cardsfile import load_cards
    from replay.day import Replay, read_taps
    from tapsim.commands.backoffice import core_config
    from tapsim.commands.tap import DEMO_TOKEN_KEY

    feed = load_feed(sample_feed_path("city"))
    cards = load_cards(str(SAMPLES / "cards.toml"))
    store = open_store(sqlite_url(tmp_path / 'p.db'))
    try:
        keys = key_store(TEST_KEK, cards.profiles())
        core = TransactionCore(store, FarePricer(feed), keys, cards.banks, DEMO_TOKEN_KEY,
                               core_config("CNY", feed.timezone))  # fmt: skip
        seen: list[tuple[int, int]] = []
        replay = Replay(core, feed, cards, token_key=DEMO_TOKEN_KEY, batch=3,
                        progress=lambda done, total: seen.append((done, total)))  # fmt: skip
        report = replay.run(read_taps((SAMPLES / "taps.csv").read_text(), feed), source="s")
    finally:
        store.close()
    assert seen[-1] == (14, 14) and len(seen) > 3
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    check_sample_story(report.to_dict())
