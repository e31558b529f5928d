"""The READMEs' commands, run as written, and what they show checked.

Every ```` ```sh ```` block of README.md and of each package's README.md is found by parsing
the Markdown (:mod:`tests.readme_blocks`), so a new block is run without editing this file:
a command no rule below names must still exit 0 without a traceback.  Blocks of other
languages hold data or code (toml, csv, text, python) and are not run; a fence with no
language fails :func:`test_every_fence_says_what_it_holds`, so none hides from this file.

Each block runs in a temporary directory laid out like a clone (``tests/readme_blocks.py``):
the repository's files linked in, ``.venv`` the running environment, ``tapsim`` on PATH, HOME
and XDG_STATE_HOME inside it.  Background commands (``... &``) are started, waited for until
ready (mosquitto: its config's port answers; the back office: it printed ``ready:``; a served
card: the vpcd reader holds it) and stopped with SIGINT, as Ctrl-C, when the block ends.  A
block that needs what an earlier README sets up says so in ``GIVEN`` (the back office's
block needs README.md's broker), and those README lines run first.

Files the reader brings (``my-card.toml``, ``path/to/gtfs.zip``, ``taps.csv`` ...) are made
from the shipped samples (``PLACEHOLDERS``); the card profile is README.md's own TOML block.

**Port 1883.** The broker block listens where ``tapsim broker config`` puts it, 1883 by
default, which a machine with Debian's mosquitto package already serves (this one does).
Decision: when 127.0.0.1:1883 is taken, the block gets a free port instead, by the one
change that keeps the rest as written: ``--port N`` appended to ``tapsim broker config`` (so
the README's own ``mosquitto -c broker/mosquitto.conf`` listens on N) and ``:1883`` in the
broker URLs read ``:N``.  A private network namespace would keep 1883 but needs privileges
that CI containers often lack; the test prints the port it used.

**Not run, or run smaller** (``RULES``, ``not_run`` / ``smaller``, each with its reason):
``./dev demo`` and ``./dev test`` (they set up the machine; ``./dev test`` runs this file), the
10 M-tap day and the simulation benchmarks (minutes; benchmarks/ measures them), and the other
``tapsim sim`` lines with ``--hours 1`` appended (every flag still taken; the full default day
runs once, as ``tapsim sim``). A simulation line whose arguments tapsim's own parser reads the
same as one already run and checked (sim/README.md repeats README.md's, spelling out defaults
or redirecting the output) is not run twice (``memo``, ``_invocation``). Lines that need a
service missing here (pcscd with vpcd) are skipped with the reason, after the rest of their
block has run and been checked. ``test_readme_report`` prints this list with the README lines
it covers.
"""

from __future__ import annotations

import csv
import json
import re
import shlex
import socket
import sqlite3
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.services import find_binary, free_port, missing, wait_port
from tests.readme_blocks import (
    ROOT,
    TRACEBACK,
    Clone,
    Command,
    Fence,
    Ran,
    Service,
    commands,
    fences,
    readme_paths,
)

README_PORT = 1883
RUN_LANGS = {"sh"}
DATA_LANGS = {"toml", "csv", "text", "json", "python", "mermaid"}
TIMEOUT_S = 120.0


@dataclass
class Ctx:
    """What one block's commands share: the clone, the broker port, earlier results."""

    clone: Clone
    port: int
    where: str
    seen: dict[str, Ran] = field(default_factory=dict)


Check = Callable[[Ran, Ctx], None]
Ready = Callable[[Service, Ctx], bool]


@dataclass(frozen=True)
class Rule:
    """How the README commands matching ``pattern`` (re.search on the line) are run."""

    pattern: str
    check: Check | None = None
    exit: int = 0
    not_run: str = ""  # the reason it is not run
    smaller: str = ""  # arguments appended: the same command, a shorter run
    ready: Ready | None = None  # a service: started, waited for, stopped at the block's end
    needs: str = ""  # a fixture of a service (pcscd)
    memo: bool = False  # the same invocation in another block was run and checked there


# -- placeholders: the files a README's reader brings ----------------------------------------


def _gtfs_zip(path: Path) -> None:
    """Lanshan as one GTFS zip: the city's fare tables and its timetable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        for folder in (ROOT / "fare/samples/city", ROOT / "sim/cities/lanshan"):
            for txt in sorted(folder.glob("*.txt")):
                z.write(txt, txt.name)


def _gtfs_zip_without_fares(path: Path) -> None:
    """The same city without its fare tables (no fare_*.txt, no rider categories): the
    feed `tapsim sim` refuses unless --flat-fare names the fare."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        for folder in (ROOT / "fare/samples/city", ROOT / "sim/cities/lanshan"):
            for txt in sorted(folder.glob("*.txt")):
                if not txt.name.startswith("fare_") and txt.name != "rider_categories.txt":
                    z.write(txt, txt.name)


def _card_profile(path: Path) -> None:
    """README.md's card profile block, as the reader would save it."""
    block = next(f for f in fences(Path("README.md")) if f.lang == "toml")
    path.write_text("\n".join(text for _, text in block.body) + "\n")


def _bad_taps(path: Path) -> None:
    """The harbour sample's taps and one row naming a stop the feed lacks."""
    rows = (ROOT / "fare/samples/harbour/taps.csv").read_text().rstrip("\n")
    path.write_text(rows + "\nbad1,card-9,2025-03-04T09:00:00+01:00,NOPE,101,on,,card\n")


PLACEHOLDERS: dict[str, Callable[[Path], None]] = {
    "my-card.toml": _card_profile,
    "path/to/gtfs.zip": _gtfs_zip,
    "my-gtfs.zip": _gtfs_zip,
    "no-fares-gtfs.zip": _gtfs_zip_without_fares,
    "path/to/gtfs-without-fares.zip": _gtfs_zip_without_fares,
    "taps.csv": lambda p: p.write_bytes((ROOT / "fare/samples/city/taps.csv").read_bytes()),
    "t.csv": _bad_taps,
}


# -- checks -----------------------------------------------------------------------------------


def _pan(profile: str) -> str:
    from emv.card.profile import load_profile

    return load_profile(profile).pan


def _atc(text: str) -> int:
    m = re.search(r"^\s*atc\s+(\d+)", text, re.M) or re.search(r'"atc": (\d+)', text)
    assert m, text
    return int(m.group(1))


def card_list(ran: Ran, ctx: Ctx) -> None:
    names = {line.split()[0] for line in ran.stdout.splitlines() if line.strip()}
    assert {"sscard3", "sscard3-sm", "unionpay-debit"} <= names


def card_show(ran: Ran, ctx: Ctx) -> None:
    pan = _pan("sscard3")
    assert f"{pan[:6]}*********{pan[-4:]}" in ran.stdout and pan not in ran.stdout
    assert "0123456789ABCDEF" not in ran.stdout.upper()  # the profile's TEST master key


def tap_approved(ran: Ran, ctx: Ctx) -> None:
    assert re.search(r"^APPROVED-OFFLINE$", ran.stdout, re.M), ran.describe()
    assert _pan("sscard3") not in ran.stdout
    last = ctx.seen.get("atc")
    if last is not None:  # "the card's ATC persists between taps"
        assert _atc(ran.stdout) > _atc(last.stdout)
    ctx.seen["atc"] = ran


def tap_trace(ran: Ran, ctx: Ctx) -> None:
    tap_approved(ran, ctx)
    assert ">> GET PROCESSING OPTIONS" in ran.stdout and "<< SW 9000" in ran.stdout


def tap_json_trace(ran: Ran, ctx: Ctx) -> None:
    out = json.loads(ran.stdout)
    assert out["outcome"] == "approved-offline" and out["oda"] == "fdda-rsa"
    assert out["apdus"] and {"c", "r"} <= set(out["apdus"][0])
    # the fields README.md lists for `tapsim tap --json`
    assert {"outcome", "reason", "aid", "label", "oda", "oda_ok", "atc", "cid", "cryptogram",
            "iad", "pan_masked", "pan_token", "tvr", "available_offline", "ac_data",
            "apdus"} <= set(out)
    assert _pan("sscard3") not in ran.stdout  # masked in the APDUs too
    tap_approved_json_atc(ran, ctx)


def tap_approved_json_atc(ran: Ran, ctx: Ctx) -> None:
    last = ctx.seen.get("atc")
    if last is not None:
        assert _atc(ran.stdout) > _atc(last.stdout)
    ctx.seen["atc"] = ran


def tap_sm(ran: Ran, ctx: Ctx) -> None:
    out = json.loads(ran.stdout)
    assert out["outcome"] == "approved-offline" and out["oda"] == "fdda-sm2" and out["oda_ok"]


def tap_epurse(ran: Ran, ctx: Ctx) -> None:
    assert "T-Union" in ran.stdout and "epurse_tac" in ran.stdout, ran.describe()
    before = int(re.search(r"epurse_balance_before\s+(\d+)", ran.stdout).group(1))  # type: ignore[union-attr]
    after = int(re.search(r"epurse_balance_after\s+(\d+)", ran.stdout).group(1))  # type: ignore[union-attr]
    assert before - after == 200


def tap_expired(ran: Ran, ctx: Ctx) -> None:
    assert ran.stdout.startswith("DECLINED") and "card-expired" in ran.stdout


def tlv_text(ran: Ran, ctx: Ctx) -> None:
    assert "82 Application Interchange Profile (AIP) [2] 2000" in ran.stdout
    assert "9F36 Application Transaction Counter (ATC) [2] 0001" in ran.stdout


def tlv_json(ran: Ran, ctx: Ctx) -> None:
    assert json.loads(ran.stdout) == [{
        "tag": "9F5D", "name": "Available Offline Spending Amount (qPBOC)", "length": 3,
        "value": "000100"}]


def _report(path: Path) -> dict[str, object]:
    report: dict[str, object] = json.loads(path.read_text())
    assert report["schema"] == "tapsim.sim/1"
    return report


def sim_default(ran: Ran, ctx: Ctx) -> None:
    out = ran.cwd / "sim-report"
    report = _report(out / "report.json")
    assert report["city"]["name"] == "lanshan" and report["run"]["hours"] == 18  # type: ignore[index]
    assert report["run"]["buses"] == 24 and report["taps"]["total"] > 0  # type: ignore[index]
    assert (out / "index.html").is_file() and len(list(out.glob("*.png"))) == 5
    assert "report: sim-report/index.html" in ran.stdout


def sim_out_day(ran: Ran, ctx: Ctx) -> None:
    report = _report(ran.cwd / "day" / "report.json")
    run = report["run"]
    assert run["buses"] == 480 and run["seed"] == 7  # type: ignore[index]


def sim_synthetic_json(ran: Ran, ctx: Ctx) -> None:
    redirected = ran.cwd / "report.json"
    report = json.loads(redirected.read_text() if "> report.json" in ran.code else ran.stdout)
    assert report["city"]["blocks"] == 200 and report["run"]["hours"] == 1  # smaller: --hours 1
    assert report["taps"]["total"] > 0


def sim_clearing_day(ran: Ran, ctx: Ctx) -> None:
    """The e-purse clearing block (sim/README.md, "The report"): every fen paid at the gate is
    cleared, pending or refused, and what the issuers owe is what was cleared."""
    report = _report(ran.cwd / "clearing-day" / "report.json")
    epurse: Any = report["revenue_fen"]["by_payment_path"]["epurse"]  # type: ignore[index]
    c = epurse["clearing"]
    assert sum(c["total"].values()) == epurse["fares_paid_at_gate"] > 0
    assert c["by_issuer"]["other_city"]["cleared"] > 0 and c["total"]["refused"] == 0
    assert sum(p["owes"] for p in c["positions"]) == c["total"]["cleared"]
    assert "e-purse clearing home: cleared" in ran.stdout


def sim_full(ran: Ran, ctx: Ctx) -> None:
    report = _report(ran.cwd / "sim-report" / "report.json")
    assert report["run"]["fidelity"] == "full" and report["taps"]["total"] > 0  # type: ignore[index]
    assert "every tap ran the real kernel" in ran.stdout


def sim_config(ran: Ran, ctx: Ctx) -> None:
    """The run names the calibration --config gave it (sim/README.md, "Calibration")."""
    if "> legacy.json" in ran.code:
        report = json.loads((ran.cwd / "legacy.json").read_text())
        assert report["service_calibration"]["name"] == "legacy-2025"
        assert report["service_calibration"]["tap_latency_law"]["quickpass"] == "kernel"
        return
    report = _report(ran.cwd / "sim-report" / "report.json")
    assert report["service_calibration"] == {
        "name": "field-2026", "source": "sim/calibrations/field-2026.toml",
        "tap_latency_law": {"quickpass": "field", "epurse": "kernel"}}
    assert re.search(r"calibration\s+field-2026 \(sim/calibrations/field-2026\.toml\)",
                     ran.stdout), ran.describe()


def sim_flat_fare(ran: Ran, ctx: Ctx) -> None:
    assert re.search(r"fares\s+a flat 2\.00 CNY per boarding \(--flat-fare 200\)", ran.stdout), \
        ran.describe()
    assert re.search(r"revenue\s+QuickPass: .*e-purse: ", ran.stdout), ran.describe()


def fare_city(ran: Ran, ctx: Ctx) -> None:
    assert "card-A" in ran.stdout and "card-G" in ran.stdout
    first = ctx.seen.setdefault("fare-city", ran)
    if first is not ran:  # the same feed as a zip prices the same
        assert ran.stdout == first.stdout


def fare_json(ran: Ran, ctx: Ctx) -> None:
    out = json.loads(ran.stdout)
    assert out["schema"] == "tapsim.fare.price" and out["schema_version"] == 1
    assert out["charges"] and out["totals"]
    assert all({"kind", "amount", "currency", "journey"} <= set(c) for c in out["charges"])


def fare_csv(ran: Ran, ctx: Ctx) -> None:
    rows = list(csv.DictReader((ran.cwd / "charges.csv").open(encoding="utf-8")))
    assert rows and {r["kind"] for r in rows} <= {"fare", "transfer", "cap", "unpriced"}
    assert {r["currency"] for r in rows} == {"CNY"}


def fare_check(ran: Ran, ctx: Ctx) -> None:
    assert "city: 0 error(s), 0 warning(s)" in ran.stdout, ran.describe()


def fare_compare(ran: Ran, ctx: Ctx) -> None:
    # the sample fare change, priced by hand in tests/test_fare_compare.py: 26.80 -> 29.10 CNY
    assert re.search(r"revenue\s+26\.80\s+29\.10\s+\+2\.30", ran.stdout), ran.describe()
    assert "pay more 4, less 0, the same 3" in ran.stdout
    m = re.search(r"--out (\S+)", ran.command.text)
    assert m, ran.command.text
    out = ran.cwd / m.group(1)
    assert {"compare.html", "compare.json"} <= {p.name for p in out.iterdir()}
    assert json.loads((out / "compare.json").read_text())["schema"] == "tapsim.fare.compare"


def fare_reject(ran: Ran, ctx: Ctx) -> None:
    assert "t.csv:16: stop_id: unknown stop 'NOPE'" in ran.stderr
    assert "nothing priced (--on-bad-row reject)" in ran.stderr and not ran.stdout


def _db(ctx: Ctx, name: str) -> sqlite3.Connection:
    path = ctx.clone.root / name
    assert path.is_file(), f"{name} is not in the current directory"
    return sqlite3.connect(path)


def replay(ran: Ran, ctx: Ctx) -> None:
    m = re.search(r"--db sqlite:///(\S+)", ran.code)
    name = m.group(1) if m else "tapsim.db"  # the default, in the current directory
    db = _db(ctx, name)
    assert db.execute("SELECT count(*) FROM taps").fetchone()[0] > 0
    assert db.execute("SELECT count(*) FROM ledger").fetchone()[0] > 0
    assert not Path("/" + name).exists() or name == "tapsim.db"
    # what backoffice/README.md says the sample shows
    out = ran.stdout
    assert "taps accepted 14, duplicates 0, rejected 2" in out, ran.describe()
    assert "reconciled: taps x fares = ledger = issuer captures" in out
    assert re.search(r"alice .* 801 tap_off .* -2\.00 ", out)  # the tap-off refund
    assert re.search(r"alice .* 2 tap_on .* 1\.00 ", out)  # the transfer discount
    assert len(re.findall(r"carol .* 0\.00 .*category senior", out)) >= 2  # free rides
    for card, code in (("bob", "51"), ("dave", "41"), ("erin", "78")):
        assert re.search(rf"{card} .* {code} ", out), (card, code)
    assert re.search(r"bob .* remove .* debts recovered", out)


def issued(ran: Ran, ctx: Ctx) -> None:
    assert re.match(r"issued \d{6}\*{9}\d{4} at ICBC", ran.stdout), ran.describe()
    m = re.search(r"--db (?:sqlite:///)?(\S+)", ran.code)
    _db(ctx, m.group(1) if m else "tapsim.db")


def account_show(ran: Ran, ctx: Ctx) -> None:
    assert "balance 50.00 CNY" in ran.stdout and "deny list   no" in ran.stdout


def account_lost(ran: Ran, ctx: Ctx) -> None:
    assert re.search(r"state\s+lost", ran.stdout), ran.describe()


def account_deposit(ran: Ran, ctx: Ctx) -> None:
    assert "balance 70.00 CNY" in ran.stdout, ran.describe()


def bank_deposit(ran: Ran, ctx: Ctx) -> None:
    """issuer/README.md's journal example: issued with 10.00, then 5.00 deposited."""
    assert "deposit 5.00: done" in ran.stdout and "balance 15.00 CNY" in ran.stdout, \
        ran.describe()


def account_activate(ran: Ran, ctx: Ctx) -> None:
    assert re.search(r"state\s+active", ran.stdout), ran.describe()


def account_replace(ran: Ran, ctx: Ctx) -> None:
    assert "622202*********0042" in ran.stdout and "replaced" in ran.stdout, ran.describe()


def account_transfer(ran: Ran, ctx: Ctx) -> None:
    assert "closed: balance 0.00" in ran.stdout and "balance moved" in ran.stdout, ran.describe()


def broker_config(ran: Ran, ctx: Ctx) -> None:
    out = re.search(r"--out (\S+)", ran.code)
    users = re.search(r"--validators (\S+)", ran.code)
    assert out and users, ran.code
    folder = ctx.clone.root / out.group(1)
    conf = (folder / "mosquitto.conf").read_text()
    assert f"listener {ctx.port}" in conf
    for name in ("backoffice", *users.group(1).split(",")):
        assert (folder / "credentials" / name).is_file()


def terminal_taps(ran: Ran, ctx: Ctx) -> None:
    lines = ran.stdout.splitlines()
    assert len(lines) == 10 and all(" GREEN " in line and "OK - senior" in line
                                    for line in lines), ran.describe()


def terminal_pcsc(ran: Ran, ctx: Ctx) -> None:
    lines = ran.stdout.splitlines()
    assert len(lines) == 1 and " GREEN " in lines[0], ran.describe()


# -- readiness of background commands -----------------------------------------------------------


def mosquitto_ready(service: Service, ctx: Ctx) -> bool:
    conf = re.search(r"-c\s+(\S+)", service.code)
    assert conf, service.code
    ports = [int(p) for p in re.findall(r"^listener\s+(\d+)", (ctx.clone.root / conf.group(1))
                                        .read_text(), re.M)]
    if not all(wait_port("127.0.0.1", p, 0.2) for p in ports):
        return False
    time.sleep(0.3)  # a mosquitto that cannot bind exits; someone else's port must not pass
    return service.proc.poll() is None


def backoffice_ready(service: Service, ctx: Ctx) -> bool:
    return "ready:" in service.output()[0]


class ServiceGoneError(Exception):
    """A service this line needs went away while the block ran (another session's pcscd)."""


def vpcd_card_ready(service: Service, ctx: Ctx) -> bool:
    from tests.fixtures.pcsc import VPCD_READER, _readers, wait_card

    if "vpcd connected" not in service.output()[1]:
        if not any(VPCD_READER in r for r in _readers()):
            raise ServiceGoneError(f"pcscd no longer shows {VPCD_READER!r} (a pcscd started by "
                              "another test session, since stopped?)")
        return False
    wait_card(VPCD_READER)
    return True


def card_served(ran: Ran, ctx: Ctx) -> None:
    m = re.search(r"served (\d+) APDUs over (\d+) connection", ran.stderr)
    assert m and int(m.group(1)) > 0, ran.describe()


def backoffice_stopped(ran: Ran, ctx: Ctx) -> None:
    assert ran.returncode == 0, ran.describe()
    assert "taps ingested" in ran.stdout, ran.describe()
    ctx.seen["backoffice"] = ran


def issuer_stopped(ran: Ran, ctx: Ctx) -> None:
    """Stopped by Ctrl-C at the block's end: 130 and what it answered (issuerhost/README)."""
    assert ran.returncode == 130, ran.describe()
    assert "tapsim: interrupted: answered" in ran.stderr, ran.describe()


def load_iso8583(ran: Ran, ctx: Ctx) -> None:
    """The card issued in the block is approved at every tap: no timeouts, only code 00."""
    assert re.search(r"answered (\d+), timeouts 0 ", ran.stdout), ran.describe()
    assert re.search(r"^00\s+\d+\s+approved$", ran.stdout, re.M), ran.describe()
    assert not re.search(r"^(?!00)\d\d\s+\d+", ran.stdout, re.M), ran.describe()


def load_validators(ran: Ran, ctx: Ctx) -> None:
    """terminal/README.md's fleet: every tap it scheduled confirmed, and in the ledger."""
    m = re.search(r"scheduled (\d+), journaled (\d+), committed (\d+), uncommitted 0,",
                  ran.stdout)
    assert m and int(m.group(1)) == int(m.group(3)) > 0, ran.describe()
    db = _db(ctx, "load.db")
    assert db.execute("SELECT COUNT(*) FROM taps").fetchone()[0] == int(m.group(3))
    assert not db.execute("SELECT field, reason FROM rejects").fetchall()


SIM_SMALLER = " --hours 1"

RULES: tuple[Rule, ...] = (
    Rule(r"^\./dev demo", not_run="sets the machine up (apt, .venv, install: minutes, root); "
         "its main job, tapsim sim, runs here as README.md and sim/README.md show it"),
    Rule(r"^\./dev test", not_run="the whole suite, this file included: it would run itself"),
    Rule(r"^\. \.venv/bin/activate"),
    Rule(r"^tapsim card list", card_list),
    Rule(r"^tapsim card show sscard3", card_show),
    Rule(r"^tapsim tap --card sscard3 +# one tap", tap_approved),
    Rule(r"^tapsim tap --card sscard3 --trace", tap_trace),
    Rule(r"^tapsim tap --card sscard3 --json --trace", tap_json_trace),
    Rule(r"^tapsim tap --card sscard3-sm --json", tap_sm),
    Rule(r"^tapsim tap --card sscard3 --prefer epurse", tap_epurse),
    Rule(r"^tapsim tap --card my-card\.toml .*--date 2031", tap_expired, exit=1),
    Rule(r"^tapsim tlv 770D", tlv_text),
    Rule(r"^tapsim tlv --json 9F5D", tlv_json),
    Rule(r"^tapsim sim +#", sim_default, memo=True),
    Rule(r"^tapsim sim --buses 20000", not_run="the 10 M-tap day: 8-13 minutes on 2 cores "
         "(benchmarks/test_bench_sim.py with TAPSIM_SIM_BENCH_BUSES=20000 measures it); a "
         "shorter day of 20,000 buses from 05:00 has next to no riders"),
    Rule(r"^tapsim sim .*--buses 480 .*--out day/", sim_out_day, smaller=SIM_SMALLER, memo=True),
    Rule(r"^tapsim sim --city synthetic:.*--out clearing-day/", sim_clearing_day, memo=True),
    Rule(r"^tapsim sim --city synthetic:", sim_synthetic_json, smaller=SIM_SMALLER, memo=True),
    Rule(r"^tapsim sim --city \S+\.zip --fidelity full", sim_full, smaller=SIM_SMALLER),
    Rule(r"^tapsim sim --config ", sim_config, smaller=SIM_SMALLER, memo=True),
    Rule(r"^tapsim sim --city \S+without-fares\.zip --flat-fare 200", sim_flat_fare,
         smaller=SIM_SMALLER, memo=True),
    Rule(r"^tapsim sim --city no-fares-gtfs\.zip --flat-fare 200", sim_flat_fare,
         smaller=SIM_SMALLER, memo=True),
    Rule(r"^\.venv/bin/pytest benchmarks/test_bench_sim\.py", not_run="a benchmark: asserts "
         "16,667 taps/s, which a machine shared with other work misses; ./dev bench runs it"),
    Rule(r"^TAPSIM_SIM_BENCH_BUSES=20000", not_run="the full-day benchmark, 8-13 minutes"),
    Rule(r"^pytest benchmarks/test_bench_restart\.py", not_run="a benchmark: builds 1, 7 and 30 "
         "days of a 10,000-card city and restarts from each, about 7 minutes; the README's "
         "restart figures come from it"),
    Rule(r"^dask (scheduler|worker) ", not_run="a Dask cluster on the reader's nodes (HOST); "
         "tests/test_sim_cluster.py starts one on 127.0.0.1 and runs tapsim sim --cluster on it"),
    Rule(r"^(TAPSIM_SIM_\w+=\S+ )*\.venv/bin/pytest benchmarks/test_bench_sim_cluster\.py",
         not_run="benchmarks and a 30-seed measurement (a minute and more each); the README's "
                 "figures come from them"),
    Rule(r"^tapsim fare price .*--format csv > charges\.csv", fare_csv),
    Rule(r"^tapsim fare price --feed city --taps fare/samples/city/taps\.csv", fare_city),
    Rule(r"^tapsim fare price --feed path/to/gtfs\.zip --taps taps\.csv --on-bad-row reject",
         fare_city),
    Rule(r"^tapsim fare price .*--json", fare_json),
    Rule(r"^tapsim fare check city", fare_check),
    Rule(r"^tapsim fare compare --feed city --feed city2026", fare_compare),
    Rule(r"^tapsim fare price --feed harbour --taps t\.csv --on-bad-row reject", fare_reject,
         exit=2),
    Rule(r"^tapsim backoffice replay", replay),
    Rule(r"^tapsim card issue", issued),
    Rule(r"^tapsim account show", account_show),
    Rule(r"^tapsim account lost", account_lost),
    Rule(r"^tapsim account deposit --db sqlite:///bank\.db .*--request-id", bank_deposit),
    Rule(r"^tapsim account deposit", account_deposit),
    Rule(r"^tapsim account activate", account_activate),
    Rule(r"^tapsim account replace", account_replace),
    Rule(r"^tapsim account confirm-transfer", account_transfer),
    Rule(r"^tapsim broker config", broker_config),
    Rule(r"^mosquitto -c ", ready=mosquitto_ready, needs="mosquitto"),
    Rule(r"tapsim backoffice run ", backoffice_stopped, ready=backoffice_ready),
    Rule(r"tapsim terminal run --broker .* --taps 10", terminal_taps),
    Rule(r"^tapsim card serve \S+ --vpcd", card_served, ready=vpcd_card_ready, needs="pcscd"),
    Rule(r"^tapsim issuer run ", issuer_stopped, ready=backoffice_ready),
    Rule(r"^tapsim load iso8583 ", load_iso8583),
    Rule(r"^tapsim load validators --broker", load_validators),
    Rule(r"^tapsim terminal run --reader \"pcsc:", terminal_pcsc, needs="pcscd"),
)


def rule_for(command: Command) -> Rule | None:
    return next((r for r in RULES if re.search(r.pattern, command.text)), None)


# -- whole blocks ----------------------------------------------------------------------------


def validator_block(ctx: Ctx) -> None:
    """The validator's ten taps are in the back office's ledger, priced, its card not refused."""
    bo = ctx.seen["backoffice"]
    assert re.search(r"taps ingested 10, duplicates 0, rejected 0, .*dead letters 0", bo.stdout)
    db = _db(ctx, "bo.db")
    rows = db.execute("SELECT validator_id, stop_id, route_id FROM taps").fetchall()
    assert rows == [("bus-001", "S01", "1")] * 10
    rejects = db.execute("SELECT field, reason FROM rejects").fetchall()
    assert not rejects, f"taps the back office rejected: {rejects}"
    denied = db.execute("SELECT reason FROM deny_list").fetchall()
    assert not denied, f"the card was deny-listed (codes {denied}): not issued into bo.db?"
    codes = {c for (c,) in db.execute("SELECT code FROM iss_auths")}
    assert codes == {"00"}, codes  # the card's bank approved its account verification


BLOCK_CHECKS: tuple[tuple[str, Callable[[Ctx], None]], ...] = (
    (r"tapsim terminal run --broker", validator_block),
)


def _broker_setup() -> list[Command]:
    """README.md's broker lines ("The validator on the bus"): config and mosquitto."""
    found = [c for f in fences(Path("README.md")) if f.lang == "sh" for c in commands(f)
             if re.match(r"(tapsim broker config|mosquitto -c)", c.code)]
    assert len(found) == 2, found
    return found


# A block that needs what another README sets up: (pattern on the block, unless it does
# so itself, its set-up lines).
GIVEN: tuple[tuple[str, str, Callable[[], list[Command]]], ...] = (
    (r"tapsim backoffice run", r"tapsim broker config", _broker_setup),
)


def _all_fences() -> list[Fence]:
    return [f for p in readme_paths() for f in fences(p)]


def _block_text(fence: Fence) -> str:
    return "\n".join(text for _, text in fence.body)


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _code_for(command: Command, rule: Rule | None, port: int) -> str:
    code = command.code
    if port != README_PORT:
        code = code.replace(f":{README_PORT}", f":{port}")
        if command.code.startswith("tapsim broker config"):
            code += f" --port {port}"
    if rule is not None and rule.smaller:
        code += rule.smaller
    return code


@pytest.fixture(scope="session")
def shared_state(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The simulation's kernel calibration, computed by the first sim line, kept for the rest."""
    return {"tapsim/sim": tmp_path_factory.mktemp("sim-calibration")}


SH_BLOCKS = [f for f in _all_fences() if f.lang in RUN_LANGS]


@pytest.mark.parametrize("fence", SH_BLOCKS, ids=[f.where for f in SH_BLOCKS])
def test_readme_block(fence: Fence, tmp_path: Path, request: pytest.FixtureRequest,
                      shared_state: dict[str, Path]) -> None:
    text = _block_text(fence)
    listed = [c for c in commands(fence) if (r := rule_for(c)) is not None and r.not_run]
    if len(listed) == len(commands(fence)):
        pytest.skip("not run here (listed in tests/test_readme.py with the reasons): "
                    + "; ".join(f"line {c.line}: {rule_for(c).not_run}" for c in listed))  # type: ignore[union-attr]
    clone = Clone.make(tmp_path, shared_state)
    for name, make in PLACEHOLDERS.items():
        make(tmp_path / name)
    uses_broker = str(README_PORT) in text or "broker config" in text
    port = free_port() if uses_broker and _port_taken(README_PORT) else README_PORT
    if port != README_PORT:
        print(f"{fence.where}: 127.0.0.1:{README_PORT} is taken here; the broker runs on "
              f"{port} (tests/test_readme.py, 'Port 1883')")
    ctx = Ctx(clone, port, fence.where)
    setup = [c for pattern, unless, given in GIVEN
             if re.search(pattern, text) and not re.search(unless, text) for c in given()]
    unavailable: dict[str, str] = {}
    not_run: list[str] = []
    try:
        for command in setup + commands(fence):
            rule = rule_for(command)
            if rule is not None and rule.not_run:
                not_run.append(f"line {command.line} ({command.code}): {rule.not_run}")
                continue
            if rule is not None and rule.needs:
                reason = _need(rule.needs, request, unavailable)
                if reason:
                    not_run.append(f"line {command.line} ({command.code}): {reason}")
                    continue
            try:
                _run_one(command, rule, ctx)
            except ServiceGoneError as exc:
                assert rule is not None and rule.needs, exc
                unavailable[rule.needs] = str(exc)
                not_run.append(f"line {command.line} ({command.code}): {exc}")
    finally:
        stopped = clone.stop_all()
    for ran in stopped:
        assert TRACEBACK not in ran.stderr, ran.describe()
        rule = rule_for(ran.command)
        if rule is not None and rule.check is not None:
            rule.check(ran, ctx)
    for pattern, check in BLOCK_CHECKS:
        if re.search(pattern, text):
            check(ctx)
    if unavailable:
        pytest.skip(f"{fence.where}: the rest ran and was checked; not run: "
                    + "; ".join(not_run))
    if not_run:
        print(f"{fence.where}: not run: " + "; ".join(not_run))


def _need(service: str, request: pytest.FixtureRequest, unavailable: dict[str, str]) -> str:
    """'' when ``service`` is here; else why not (and the test skips at the block's end)."""
    if service in unavailable:
        return unavailable[service]
    if service == "mosquitto":
        if find_binary("mosquitto") is None:
            missing("mosquitto", "install the Debian package 'mosquitto'")
        return ""
    try:
        request.getfixturevalue(service)
    except pytest.skip.Exception as exc:
        unavailable[service] = str(exc)
        return unavailable[service]
    return ""


_MEMO: dict[str, str] = {}  # invocation -> where it ran and passed its check


def _invocation(code: str) -> str:
    """What tapsim's own parser makes of ``code``'s arguments, the shell's ``> FILE`` aside:
    `tapsim sim --buses 480 ...` and `tapsim sim --city lanshan --hours 18 --buses 480 ...`
    are one invocation (lanshan and 18 h are the defaults)."""
    from tapsim.cli import build_parser

    argv = shlex.split(re.sub(r"\s>\s*\S+", " ", code))
    assert argv[0] == "tapsim", code
    args = vars(build_parser().parse_args(argv[1:]))
    args.pop("func", None)
    return repr(sorted(args.items()))


def _run_one(command: Command, rule: Rule | None, ctx: Ctx) -> None:
    code = _code_for(command, rule, ctx.port)
    clone = ctx.clone
    if command.code.startswith(". ") or command.code.startswith("source "):
        ran = clone.source(command, code)
        assert ran.returncode == 0, ran.describe()
        return
    if command.background or (rule is not None and rule.ready is not None):
        service = clone.start(command, code)
        if rule is not None and rule.ready is not None:
            ready = rule.ready
            clone.wait_until(service, lambda s: ready(s, ctx))
        return
    key = _invocation(code) if rule is not None and rule.memo else ""
    if key in _MEMO:
        # the simulation of one seed is a pure function of its arguments: same result
        print(f"  {code}: the same invocation ran and was checked at {_MEMO[key]}")
        return
    started = time.monotonic()
    ran = clone.run(command, code, TIMEOUT_S)
    print(f"{time.monotonic() - started:6.1f} s  {code}")
    expected = rule.exit if rule is not None else 0
    assert ran.returncode == expected, ran.describe()
    assert TRACEBACK not in ran.stderr, ran.describe()
    if rule is not None and rule.check is not None:
        rule.check(ran, ctx)
    if key:
        _MEMO[key] = f"{ctx.where} line {command.line}"


# -- the list itself ---------------------------------------------------------------------------


def test_every_fence_says_what_it_holds() -> None:
    """A fence without a language would be neither run nor listed: name it (sh runs)."""
    unknown = [f"{f.where}: ```{f.lang}" for f in _all_fences()
               if f.lang not in RUN_LANGS | DATA_LANGS]
    assert not unknown, "fences of no known language: " + ", ".join(unknown)


def test_every_rule_names_a_readme_line() -> None:
    """A rule whose command left the READMEs is stale: drop it with the line."""
    lines = [c for f in SH_BLOCKS for c in commands(f)]
    stale = [r.pattern for r in RULES if not any(re.search(r.pattern, c.text) for c in lines)]
    assert not stale, stale


def test_readme_report(capsys: pytest.CaptureFixture[str]) -> None:
    """The README lines this file does not run, or runs smaller, each with its reason."""
    rows = []
    for fence in SH_BLOCKS:
        for c in commands(fence):
            rule = rule_for(c)
            if rule is not None and rule.not_run:
                rows.append(f"{fence.path}:{c.line}: {c.code[:60]}: not run: {rule.not_run}")
            elif rule is not None and rule.smaller:
                rows.append(f"{fence.path}:{c.line}: {c.code[:60]}: run with{rule.smaller}")
    assert all(row.split(": ", 2)[2] for row in rows)
    with capsys.disabled():
        print("\nREADME lines not run as written (tests/test_readme.py):\n  "
              + "\n  ".join(rows))


def test_commands_are_split_as_a_reader_pastes_them() -> None:
    body = ["# a comment line", "", "a --x 1 \\", "  --y '#not a comment' # {\"k\"}",
            "b & # in the background", "c && d", "e#f"]
    fence = Fence(Path("X.md"), 1, "sh", tuple((i + 2, t) for i, t in enumerate(body)))
    got = [(c.code, c.line, c.background) for c in commands(fence)]
    assert got == [("a --x 1 --y '#not a comment'", 4, False), ("b", 6, True),
                   ("c && d", 7, False), ("e#f", 8, False)]
