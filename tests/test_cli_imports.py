"""Fast start: each command path imports only what it uses (tapsim/cli.py's docstring).

Every test runs one real command in a child process and looks at the packages that
ended up in ``sys.modules``: behaviour, not timing (the timings are in
benchmarks/test_bench_startup.py).  Also: the constants the parsers write out instead
of importing the domain are equal to the domain's own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fare.samples import sample_taps_path
from tapsim.cli import commands_needed, main
from tapsim.commands import COMMANDS

# What issue 14 and issue 11 name as too heavy for the everyday paths.
HEAVY = {"psycopg", "aiomqtt", "paho", "simpy", "matplotlib", "numpy", "sim"}
DOMAIN = {"emv", "fare", "issuer", "backoffice", "terminal", "wire", "sim"}
THIRD_PARTY = {"rich", "cryptography", "msgspec", "gmpy2", "pyemv"}
_CHILD = """
import atexit, json, sys
def _dump():
    with open(sys.argv[1], "w") as f:
        json.dump(sorted({m.split(".")[0] for m in sys.modules}), f)
atexit.register(_dump)
from tapsim.cli import main
sys.exit(main(sys.argv[2:]))
"""


def imported(tmp_path: Path, *args: str) -> set[str]:
    """Top-level packages imported by ``tapsim ARGS`` run in a fresh interpreter."""
    out = tmp_path / "modules.json"
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    run = subprocess.run([sys.executable, "-c", _CHILD, str(out), *args], check=False,
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return set(json.loads(out.read_text()))


def test_clearing_imports_the_store_and_clearing_not_the_validator(tmp_path: Path) -> None:
    from backoffice.storage import open_store, sqlite_url

    db = sqlite_url(tmp_path / "c.db")
    open_store(db).close()  # a back office's database (clearing refuses one that is not there)
    mods = imported(tmp_path, "clearing", "run", "--db", db, "--day", "2026-11-23")
    assert {"clearing", "backoffice", "emv"} <= mods
    assert not mods & {"terminal", "aiomqtt", "paho", "simpy", "matplotlib", "numpy", "sim"}


@pytest.fixture
def taps10(tmp_path: Path) -> Path:
    """Ten taps of the city sample (header + 10 rows)."""
    lines = sample_taps_path("city").read_text().splitlines()
    path = tmp_path / "taps10.csv"
    path.write_text("\n".join(lines[:11]) + "\n")
    return path


def test_version_imports_nothing_of_the_domain(tmp_path: Path) -> None:
    assert imported(tmp_path, "--version") & (DOMAIN | THIRD_PARTY | HEAVY) == set()


def test_tlv_imports_emv_only(tmp_path: Path) -> None:
    mods = imported(tmp_path, "tlv", "9F3602000170035A0112")
    assert "emv" in mods
    assert mods & (DOMAIN | THIRD_PARTY | HEAVY) == {"emv"}


@pytest.mark.parametrize("output", [[], ["--json"]])
def test_tap_imports_the_kernel_not_the_back_office(tmp_path: Path, output: list[str]) -> None:
    mods = imported(tmp_path, "tap", "--card", "sscard3", "--fresh", *output)
    assert "emv" in mods
    assert not mods & ({"fare", "issuer", "backoffice", "terminal"} | HEAVY)
    assert ("rich" in mods) == (not output)  # the human output only


@pytest.mark.parametrize("output", [[], ["--json"]])
def test_fare_price_imports_the_fare_engine_only(tmp_path: Path, taps10: Path,
                                                 output: list[str]) -> None:
    mods = imported(tmp_path, "fare", "price", "--feed", "city", "--taps", str(taps10), *output)
    assert "fare" in mods
    assert mods & (DOMAIN | THIRD_PARTY | HEAVY) - {"rich"} == {"fare"}
    assert ("rich" in mods) == (not output)  # the table only


@pytest.mark.parametrize("args", [["card", "list"], ["card", "show", "sscard3", "--json"]])
def test_card_profiles_need_emv_only(tmp_path: Path, args: list[str]) -> None:
    mods = imported(tmp_path, *args)
    assert not mods & ({"fare", "issuer", "backoffice", "terminal", "rich"} | HEAVY)


def test_branch_commands_need_no_mqtt_nor_simulation(tmp_path: Path) -> None:
    db = str(tmp_path / "bank.db")  # a plain path: SQLite
    issue = imported(tmp_path, "card", "issue", "--profile", "sscard3", "--db", db, "--json")
    show = imported(tmp_path, "account", "show", "--card", "sscard3", "--db", db, "--json")
    for mods in (issue, show):
        assert {"issuer", "backoffice"} <= mods
        assert not mods & {"aiomqtt", "paho", "simpy", "matplotlib", "numpy", "sim",
                           "terminal", "rich"}


def test_an_offline_validator_needs_no_mqtt(tmp_path: Path) -> None:
    mods = imported(tmp_path, "terminal", "run", "--taps", "1", "--fresh-card", "--journal",
                    str(tmp_path / "v.journal"), "--json")
    assert "terminal" in mods
    assert not mods & ({"aiomqtt", "paho", "backoffice", "issuer"} | HEAVY)


def test_replay_needs_no_mqtt_nor_simulation(tmp_path: Path) -> None:
    samples = Path(__file__).resolve().parents[1] / "backoffice" / "samples"
    mods = imported(tmp_path, "backoffice", "replay", "--feed", "city", "--taps",
                    str(samples / "taps.csv"), "--cards", str(samples / "cards.toml"),
                    "--db", str(tmp_path / "r.db"), "--json")
    assert {"backoffice", "fare", "emv"} <= mods
    assert not mods & {"aiomqtt", "paho", "simpy", "matplotlib", "numpy", "sim", "terminal"}


def test_help_lists_every_command(tmp_path: Path) -> None:
    """`tapsim --help` is the one run that imports every command module."""
    run = subprocess.run([sys.executable, "-m", "tapsim.cli", "--help"], check=False,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0
    listed = [line.split()[0] for line in run.stdout.splitlines()
              if line.startswith("    ") and line[4] != " "]
    assert listed == list(COMMANDS)


@pytest.mark.parametrize(("argv", "needed"), [
    (["tap", "--card", "x"], ["tap"]),
    (["--version"], []),
    (["--version", "tap"], []),
    (["--help"], None),
    (["-h", "tap"], None),
    (["tap", "--help"], ["tap"]),
    (["no-such-command"], None),
    ([], None),
])
def test_the_parser_holds_the_command_it_runs(argv: list[str], needed: list[str] | None) -> None:
    assert commands_needed(argv) == needed


def test_an_unknown_command_is_told_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["frobnicate"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'frobnicate'" in err
    assert all(f"'{name}'" in err for name in COMMANDS)


# -- constants the parsers write out, equal to the domain's -------------------------------


def test_written_out_constants_equal_the_domain_s() -> None:
    from backoffice import branch
    from emv.kernel import Outcome
    from fare.samples import sample_names
    from issuer.models import ReplaceReason
    from replay import day as replay
    from tapsim.commands import account, backoffice, fare, tap, terminal
    from wire.messages import Action

    assert list(fare.SAMPLE_FEEDS) == sample_names()
    assert backoffice.DEFAULT_BATCH == replay.DEFAULT_BATCH
    assert account.DEFAULT_BANK == branch.DEFAULT_BANK
    assert tuple(r.value for r in ReplaceReason) == account.REPLACE_REASONS
    assert tuple(a.value for a in Action) == terminal.ACTIONS
    assert set(tap.OUTCOME_STYLE) == {o.value for o in Outcome}
    from clearing.report import FORMATS
    from tapsim.commands import clearing

    assert tuple(FORMATS) == clearing.FORMATS


def test_load_list_pans_imports_the_card_not_the_bank(tmp_path: Path) -> None:
    mods = imported(tmp_path, "load", "iso8583", "--card", "sscard3", "--cards", "2",
                    "--list-pans")
    assert {"emv", "isolink"} <= mods
    assert not mods & ({"fare", "issuer", "backoffice", "terminal", "iso8583"} | HEAVY)
