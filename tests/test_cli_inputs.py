"""Bad inputs are refused before any work or write (issue 11, item 4), one test per input.

Two ways to refuse, both exit 2 with the option named and no traceback: a number out of
range stops the parse (argparse: ``argument --x: ...``); a path, a URL or a currency is a
UserError at the start of the run (``tapsim: error: ...``).  Each test also checks that
nothing was written: no database, journal or state file appears.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tapsim import checks
from tapsim.cli import main
from tapsim.errors import UserError

AT = "2025-03-01T10:00:00+08:00"
HUGE = str(10**20)


def refused(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """stderr of a run that ends with a UserError (exit 2, one line, no traceback)."""
    code = main(list(args))
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("tapsim: error: ") and "Traceback" not in err
    return err


def parse_refused(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """stderr of a run that the parser stops (exit 2, the option named)."""
    with pytest.raises(SystemExit) as stop:
        main(list(args))
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "error: argument " in err and "Traceback" not in err
    return err


def child(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``tapsim ARGS`` in a child process, for commands that would otherwise block."""
    return subprocess.run([sys.executable, "-m", "tapsim.cli", *args], check=False,
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)


# -- card issue and account ---------------------------------------------------------------


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "bank.db"


def test_card_issue_refuses_an_unknown_currency_before_saving(
        capsys: pytest.CaptureFixture[str], db_path: Path) -> None:
    err = refused(capsys, "card", "issue", "--db", str(db_path), "--profile", "sscard3",
                  "--currency", "XYZ", "--at", AT)
    assert "--currency 'XYZ' is not an ISO 4217 currency code" in err
    assert not db_path.exists()


def test_card_issue_names_the_upper_case_code(capsys: pytest.CaptureFixture[str],
                                              db_path: Path) -> None:
    err = refused(capsys, "card", "issue", "--db", str(db_path), "--profile", "sscard3",
                  "--currency", "cny")
    assert "(codes are upper case: CNY)" in err
    assert not db_path.exists()


@pytest.mark.parametrize("balance", [HUGE, "-1", "12.5"])
def test_card_issue_refuses_a_balance_out_of_range(capsys: pytest.CaptureFixture[str],
                                                   db_path: Path, balance: str) -> None:
    err = parse_refused(capsys, "card", "issue", "--db", str(db_path), "--profile", "sscard3",
                        "--balance", balance)
    assert "argument --balance: " in err
    assert not db_path.exists()


def _issue(capsys: pytest.CaptureFixture[str], db_path: Path, currency: str = "CNY") -> None:
    """A card issued into the database (the currency as an older tapsim stored it)."""
    from backoffice.branch import issue
    from emv.card.profile import load_profile
    from tapsim.commands.account import _Branch

    branch = _Branch(argparse.Namespace(db=str(db_path)), [load_profile("sscard3")],
                     create=True)
    try:
        issue(branch.issuer, load_profile("sscard3"), bank="ICBC", balance=1000,
              currency=currency, now=dt.datetime.fromisoformat(AT))
        branch.save()
    finally:
        branch.close()


def _balance(db_path: Path) -> int:
    from backoffice.storage import open_store
    from tapsim.commands.backoffice import db_url

    store = open_store(db_url(str(db_path)))
    try:
        (account,) = store.load_issuer().accounts
        return int(account.balance)
    finally:
        store.close()


def test_account_show_of_a_stored_bad_currency_is_an_error(
        capsys: pytest.CaptureFixture[str], db_path: Path) -> None:
    _issue(capsys, db_path, currency="XYZ")
    err = refused(capsys, "account", "show", "--db", str(db_path), "--card", "sscard3")
    assert "is in 'XYZ', not an ISO 4217 currency code" in err
    err = refused(capsys, "account", "deposit", "--db", str(db_path), "--card", "sscard3",
                  "--amount", "500")
    assert "'XYZ'" in err
    assert _balance(db_path) == 1000  # refused before the deposit


@pytest.mark.parametrize("amount", [HUGE, "0", "-5"])
def test_a_deposit_out_of_range_is_refused(capsys: pytest.CaptureFixture[str], db_path: Path,
                                           amount: str) -> None:
    _issue(capsys, db_path)
    err = parse_refused(capsys, "account", "deposit", "--db", str(db_path), "--card", "sscard3",
                        "--amount", amount)
    assert "argument --amount: " in err
    assert _balance(db_path) == 1000


def test_a_replacement_balance_out_of_range_is_refused(capsys: pytest.CaptureFixture[str],
                                                       db_path: Path) -> None:
    err = parse_refused(capsys, "account", "replace", "--db", str(db_path), "--card", "sscard3",
                        "--new-profile", "unionpay-debit", "--balance", HUGE)
    assert "argument --balance: " in err and "out of range" in err
    assert not db_path.exists()


@pytest.mark.parametrize("command", [
    ["account", "show", "--card", "sscard3"],
    ["account", "deposit", "--card", "sscard3", "--amount", "100"],
    ["account", "lost", "--card", "sscard3"],
])
def test_account_commands_do_not_create_a_database(capsys: pytest.CaptureFixture[str],
                                                   tmp_path: Path, command: list[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    err = refused(capsys, *command, "--db", str(tmp_path / "typo.db"))
    assert f"no database {tmp_path / 'typo.db'} (tapsim card issue creates one)" in err
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TAPSIM_DB", raising=False)
    err = refused(capsys, *command)  # the default: tapsim.db here
    assert "no database tapsim.db" in err
    assert list(tmp_path.iterdir()) == []


def test_account_show_checks_its_clock(capsys: pytest.CaptureFixture[str],
                                      db_path: Path) -> None:
    err = refused(capsys, "account", "show", "--db", str(db_path), "--card", "sscard3",
                  "--at", "garbage")
    assert "--at 'garbage' is not an ISO 8601 date and time" in err
    assert not db_path.exists()


@pytest.mark.parametrize("command", [
    ["account", "show", "--card", "sscard3"],
    ["card", "issue", "--profile", "sscard3"],
])
def test_a_malformed_database_url_is_an_error(capsys: pytest.CaptureFixture[str],
                                              command: list[str]) -> None:
    err = refused(capsys, *command, "--db", "postgresql://tapsim:secret@[::1/test")
    assert "database URL 'postgresql://tapsim:***@[::1/test': Invalid IPv6 URL" in err


def test_tlv_of_nothing_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert "no hex given" in refused(capsys, "tlv", "  ")


# -- backoffice replay and run ------------------------------------------------------------


def test_replay_refuses_a_batch_of_zero_before_opening_the_database(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    err = parse_refused(capsys, "backoffice", "replay", "--feed", "city", "--taps", "-",
                        "--cards", "sscard3", "--db", str(tmp_path / "r.db"), "--batch", "0")
    assert "argument --batch: 0 is out of range: 1 to 1,000,000 taps" in err
    assert not (tmp_path / "r.db").exists()


def test_replay_takes_an_atc_window_in_range(capsys: pytest.CaptureFixture[str],
                                            tmp_path: Path) -> None:
    """``--atc-window`` reaches the core's rules (the end-to-end crash tests run with 4096);
    out of 1..4096 it stops the parse."""
    from tapsim.commands.backoffice import core_config

    assert core_config("CNY", dt.UTC, 4096).atc_window == 4096
    assert core_config("CNY", dt.UTC).atc_window == 64
    err = parse_refused(capsys, "backoffice", "replay", "--feed", "city", "--taps", "-",
                        "--cards", "sscard3", "--db", str(tmp_path / "r.db"),
                        "--atc-window", "5000")
    assert "argument --atc-window: 5000 is out of range: 1 to 4,096 counter values" in err
    assert not (tmp_path / "r.db").exists()


def test_replay_refuses_a_malformed_database_url(capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path) -> None:
    from fare.samples import sample_taps_path

    err = refused(capsys, "backoffice", "replay", "--feed", "city", "--taps",
                  str(sample_taps_path("city")), "--cards", "sscard3", "--db",
                  "postgresql://[::1")
    assert "Invalid IPv6 URL" in err


@pytest.mark.parametrize(("option", "value"), [
    ("--workers", "0"), ("--workers", "65"), ("--batch", "0"), ("--tick", "0"),
    ("--snapshot-every", "-1"), ("--tick", "nan"), ("--atc-window", "0"),
    ("--atc-window", "4097"),
])
def test_backoffice_run_numbers_out_of_range(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                             option: str, value: str) -> None:
    err = parse_refused(capsys, "backoffice", "run", "--broker", "mqtt://127.0.0.1:1",
                        "--db", str(tmp_path / "b.db"), option, value)
    assert f"argument {option}: " in err
    assert not (tmp_path / "b.db").exists()


@pytest.mark.parametrize(("stats", "message"), [
    ("afile/stats.json", "afile is a file, not a folder"),
    (".", "is a folder, not a file"),
])
def test_backoffice_run_checks_its_stats_file_before_running(tmp_path: Path, stats: str,
                                                             message: str) -> None:
    (tmp_path / "afile").write_text("")
    done = child(tmp_path, "backoffice", "run", "--broker", "mqtt://127.0.0.1:1", "--db",
                 str(tmp_path / "b.db"), "--stats", stats)
    assert done.returncode == 2, done.stderr
    assert f"tapsim: error: --stats {stats}: " in done.stderr and message in done.stderr
    assert not (tmp_path / "b.db").exists()


def test_backoffice_run_checks_its_ca_file(tmp_path: Path) -> None:
    done = child(tmp_path, "backoffice", "run", "--broker", "mqtts://backoffice@127.0.0.1:1",
                 "--ca", "missing.pem", "--db", str(tmp_path / "b.db"))
    assert done.returncode == 2, done.stderr
    assert "tapsim: error: --ca missing.pem: no such file" in done.stderr
    assert not (tmp_path / "b.db").exists()


def test_backoffice_run_refuses_a_malformed_database_url(tmp_path: Path) -> None:
    done = child(tmp_path, "backoffice", "run", "--broker", "mqtt://127.0.0.1:1", "--db",
                 "postgresql://[::1")
    assert done.returncode == 2, done.stderr
    assert "tapsim: error: database URL 'postgresql://[::1': Invalid IPv6 URL" in done.stderr


# -- terminal run -------------------------------------------------------------------------


def terminal(*args: str) -> list[str]:
    return ["terminal", "run", "--taps", "1", "--fresh-card", *args]


def test_a_journal_under_a_file_is_an_error(capsys: pytest.CaptureFixture[str],
                                            tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    journal = tmp_path / "afile" / "v.journal"
    err = refused(capsys, *terminal("--journal", str(journal)))
    assert f"--journal {journal}: {tmp_path / 'afile'} is a file, not a folder" in err


def test_a_journal_that_is_a_folder_is_an_error(capsys: pytest.CaptureFixture[str],
                                                tmp_path: Path) -> None:
    err = refused(capsys, *terminal("--journal", str(tmp_path)))
    assert f"--journal {tmp_path}: is a folder, not a file" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("option", "value"), [
    ("--amount", HUGE), ("--amount", "-5"), ("--keep-days", "1e308"), ("--keep-days", "-1"),
    ("--duplicate-window", "1e300"), ("--duplicate-window", "-5"), ("--interval", "-1"),
    ("--interval", "nan"), ("--drain", "-1"), ("--senior-age", "-3"), ("--taps", "-1"),
])
def test_terminal_numbers_out_of_range_stop_before_the_journal(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, option: str, value: str) -> None:
    err = parse_refused(capsys, *terminal("--journal", str(tmp_path / "v.journal"),
                                          option, value))
    assert f"argument {option}: " in err
    assert list(tmp_path.iterdir()) == []


def test_a_missing_ca_file_stops_the_validator_before_its_journal(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    err = refused(capsys, *terminal("--journal", str(tmp_path / "v.journal"), "--broker",
                                    "mqtts://v1@127.0.0.1:1", "--ca", str(tmp_path / "no.pem")))
    assert f"--ca {tmp_path / 'no.pem'}: no such file" in err
    assert list(tmp_path.iterdir()) == []


# -- tap and card serve -------------------------------------------------------------------


def test_tap_checks_its_state_file_before_tapping(capsys: pytest.CaptureFixture[str],
                                                  tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    state = tmp_path / "afile" / "card.json"
    code = main(["tap", "--card", "sscard3", "--state", str(state)])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""  # no outcome: the card was never tapped
    assert f"tapsim: error: --state {state}: {tmp_path / 'afile'} is a file, not a folder" in err


def test_tap_refuses_an_amount_out_of_range(capsys: pytest.CaptureFixture[str]) -> None:
    err = parse_refused(capsys, "tap", "--card", "sscard3", "--fresh", "--amount", HUGE)
    assert "argument --amount: 100000000000000000000 is out of range: 0 to " \
           "999,999,999,999 minor units" in err


def test_card_serve_checks_its_state_file_before_serving(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    done = child(tmp_path, "card", "serve", "sscard3", "--vpcd", "127.0.0.1:1", "--state",
                 "afile/card.json")
    assert done.returncode == 2, done.stderr
    assert "tapsim: error: --state afile/card.json: afile is a file, not a folder" \
        in done.stderr
    assert "serving" not in done.stderr


# -- the checks themselves ----------------------------------------------------------------


def test_number_types_name_the_range() -> None:
    seconds = checks.number(0, 60, "seconds")
    assert seconds("1.5") == 1.5
    for bad, message in [("-1", "-1 is out of range: 0 to 60 seconds"),
                         ("inf", "inf is out of range"), ("x", "'x' is not a number")]:
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            seconds(bad)
    whole = checks.integer(1, 9)
    assert whole("9") == 9
    with pytest.raises(argparse.ArgumentTypeError, match=r"'1\.0' is not a whole number"):
        whole("1.0")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_folder_is_named(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(UserError, match=r"cannot write in .*locked.*permission denied"):
        checks.check_output_file(locked / "sub" / "x.json", "--state")


def test_max_amount_is_the_kernel_s_and_the_wire_s() -> None:
    import msgspec

    from emv.kernel import TransactionInput
    from wire.messages import Fen

    day = dt.date(2026, 3, 2)
    TransactionInput(amount=checks.MAX_AMOUNT, date=day, unpredictable_number=bytes(4))
    with pytest.raises(ValueError, match="amounts are 0 to 999999999999"):
        TransactionInput(amount=checks.MAX_AMOUNT + 1, date=day, unpredictable_number=bytes(4))
    assert msgspec.convert(checks.MAX_AMOUNT, Fen) == checks.MAX_AMOUNT
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(checks.MAX_AMOUNT + 1, Fen)


def test_max_workers_is_the_consumer_s() -> None:
    from backoffice.consumer import ConsumerConfig
    from tapsim.commands.backoffice import MAX_WORKERS

    assert ConsumerConfig(workers=MAX_WORKERS).workers == MAX_WORKERS
    with pytest.raises(ValueError, match="workers must be 1-64"):
        ConsumerConfig(workers=MAX_WORKERS + 1)
