"""`tapsim sim` as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tapsim.cli import main
from tests.sim_support import CALIBRATION_DIR

CITY = "synthetic:routes=2,stops=6,buses=4,start=6,end=9"


@pytest.fixture(autouse=True)
def _calibration_store(monkeypatch: pytest.MonkeyPatch) -> None:
    # The command keeps its calibration under $XDG_STATE_HOME/tapsim/sim.
    monkeypatch.setenv("XDG_STATE_HOME", str(CALIBRATION_DIR / "xdg"))


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_json_report_and_files(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_dir = tmp_path / "report"
    code, out, err = run_cli(capsys, "sim", "--city", CITY, "--hours", "2", "--start", "6",
                             "--json", "--out", str(out_dir), "--workers", "1", "--seed", "4")
    assert code == 0, err
    report = json.loads(out)
    assert report["schema"] == "tapsim.sim/1"
    assert report["run"]["seed"] == 4 and report["run"]["buses"] == 4
    assert report["taps"]["total"] > 0
    assert set(report["tap_latency_ms"]) == {"p50", "p95", "p99", "mean"}
    assert report["latency_source"]["fidelity"] == "calibrated"
    for name in ("report.json", "index.html", "tap_latency.png", "dwell.png", "backlog.png",
                 "deny_propagation.png", "revenue_declines.png"):
        assert (out_dir / name).stat().st_size > 0, name
    assert json.loads((out_dir / "report.json").read_text())["taps"] == report["taps"]
    html = (out_dir / "index.html").read_text()
    assert "tap latency" in html and "tap_latency.png" in html
    assert err == ""  # no progress bar when --json (and not a terminal)


def test_peak_rate_and_shards_reach_the_run(capsys: pytest.CaptureFixture[str],
                                            tmp_path: Path) -> None:
    six_routes = "synthetic:routes=6,stops=6,buses=6,start=6,end=9"
    reports = []
    for city, rate, shards in ((CITY, "6", ()), (CITY, "24", ()), (six_routes, "12", ()),
                               (six_routes, "12", ("--shards", "3"))):
        code, out, err = run_cli(capsys, "sim", "--city", city, "--hours", "2", "--start", "6",
                                 "--json", "--out", str(tmp_path / rate), "--workers", "1",
                                 "--peak-rate", rate, *shards)
        assert code == 0, err
        reports.append(json.loads(out))
    quiet, busy, auto, three = reports
    assert busy["taps"]["total"] > 2 * quiet["taps"]["total"]
    assert auto["run"]["shards"] == 4  # the automatic count for a small city
    assert three["run"]["shards"] == 3 and three["wall"]["workers"] == 1
    assert quiet["run"]["shards"] == 2  # two routes: a route never straddles two shards


def test_human_summary(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run_cli(capsys, "sim", "--city", CITY, "--hours", "1", "--start", "7",
                           "--out", str(tmp_path), "--workers", "1")
    assert code == 0
    for key in ("tap latency", "dwell", "uplink", "deny list", "revenue", "back office"):
        assert key in out
    assert "calibrated:" in out and "field-2026" in out  # outcome source, calibration used
    assert str(tmp_path / "index.html") in out


@pytest.mark.parametrize(("argv", "message"), [
    (["--city", "atlantis"], "no such city"),
    (["--city", CITY, "--hours", "0"], "--hours"),
    (["--city", CITY, "--buses", "0"], "--buses"),
    (["--city", "synthetic:routes=x"], "not an integer"),
    (["--city", CITY, "--workers", "0"], "--workers"),
    (["--city", CITY, "--peak-rate", "-3"], "--peak-rate"),
    (["--city", CITY, "--peak-rate", "nan"], "--peak-rate"),
    (["--city", CITY, "--shards", "100"], "shards must be 1..99"),
])
def test_bad_input_exits_2_with_a_message(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                          argv: list[str], message: str) -> None:
    code, _, err = run_cli(capsys, "sim", *argv, "--out", str(tmp_path))
    assert code == 2
    assert message in err and "Traceback" not in err


# --- checked before any work (issue 11, item 4) -----------------------------------------------


@pytest.fixture
def no_simulation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the command starts simulating (the check must come first)."""
    import sim.simulate

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the simulation ran before the bad input was reported")

    monkeypatch.setattr(sim.simulate, "simulate", refuse)


@pytest.mark.usefixtures("no_simulation")
@pytest.mark.parametrize(("out", "message"), [
    ("a-file", "exists and is not a folder"),
    ("a-file/report", "a-file is not a folder"),
    ("/proc/tapsim-report", "cannot write in /proc"),
])
def test_unusable_out_is_refused_before_the_run(capsys: pytest.CaptureFixture[str],
                                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                out: str, message: str) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("not a folder")
    code, _, err = run_cli(capsys, "sim", "--city", CITY, "--out", out)
    assert code == 2 and "Traceback" not in err
    assert message in err and "--out" in err


@pytest.mark.usefixtures("no_simulation")
@pytest.mark.parametrize(("argv", "message"), [
    (["--seed", "-1"], "--seed"),
    (["--start", "24"], "start hour"),
    (["--servers", "0"], "servers"),
    (["--flat-fare", "-5"], "--flat-fare"),
    (["--buses", "10000000"], "--buses must be 1..100,000"),
])
def test_options_are_checked_before_the_run(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                            argv: list[str], message: str) -> None:
    code, _, err = run_cli(capsys, "sim", "--city", CITY, *argv, "--out", str(tmp_path / "r"))
    assert code == 2 and message in err, err
    assert not (tmp_path / "r").exists()


def test_a_finished_report_replaces_the_old_one_whole(capsys: pytest.CaptureFixture[str],
                                                      tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A report interrupted while it is written leaves the folder as it was."""
    import sim.report

    out = tmp_path / "report"
    out.mkdir()
    (out / "report.json").write_text('{"old": true}')
    (out / "notes.txt").write_text("the user's own file")

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(sim.report, "_plots", interrupted)
    code, _, err = run_cli(capsys, "sim", "--city", CITY, "--hours", "1", "--start", "7",
                           "--workers", "1", "--out", str(out))
    assert code == 130
    assert err.strip() == "tapsim: interrupted: 2 of 2 shards simulated, nothing written"
    assert (out / "report.json").read_text() == '{"old": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # no temporary folder
    monkeypatch.undo()
    code, _, _ = run_cli(capsys, "sim", "--city", CITY, "--hours", "1", "--start", "7",
                         "--workers", "1", "--out", str(out), "--json")
    assert code == 0
    assert json.loads((out / "report.json").read_text())["schema"] == "tapsim.sim/1"
    assert (out / "notes.txt").read_text() == "the user's own file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


# --- pricing: the feed's fare tables, or a flat fare the user names (issue 11, item 5) ----
# (checked in sim.simulate.prepare once the city is loaded, before the kernel's calibration)


def no_fare_tables(folder: Path) -> Path:
    """The synthetic city as a GTFS folder without its fare tables."""
    from sim.synthetic import parse_synthetic, synthetic_texts

    folder.mkdir()
    for name, text in synthetic_texts(parse_synthetic(CITY)).items():
        if name in ("agency.txt", "stops.txt", "routes.txt", "trips.txt", "stop_times.txt",
                    "calendar.txt", "calendar_dates.txt"):
            (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_a_feed_without_fare_tables_needs_a_flat_fare(capsys: pytest.CaptureFixture[str],
                                                      tmp_path: Path) -> None:
    feed = no_fare_tables(tmp_path / "gtfs")
    code, _, err = run_cli(capsys, "sim", "--city", str(feed), "--out", str(tmp_path / "r"))
    assert code == 2
    assert "has no fare tables" in err and "--flat-fare FEN" in err


def test_flat_fare_is_refused_for_a_feed_with_fare_tables(capsys: pytest.CaptureFixture[str],
                                                          tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "sim", "--city", CITY, "--flat-fare", "200",
                           "--out", str(tmp_path / "r"))
    assert code == 2 and "has its own fare tables" in err, err


def test_flat_fare_prices_quickpass_and_epurse_and_says_so(capsys: pytest.CaptureFixture[str],
                                                           tmp_path: Path) -> None:
    feed = no_fare_tables(tmp_path / "gtfs")
    code, out, err = run_cli(capsys, "sim", "--city", str(feed), "--flat-fare", "300",
                             "--hours", "2", "--start", "6", "--workers", "1",
                             "--out", str(tmp_path / "r"))
    assert code == 0, err
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["pricing"]["source"] == "flat fare"
    assert report["pricing"]["flat_fare"] == 300
    assert "FlatFarePricer" in report["wired"]["fares"]
    rev, taps = report["revenue_fen"], report["taps"]
    # Every boarding pays 3.00 CNY: no tap-offs, discounts or caps under a flat fare.
    assert rev["epurse_fares"] == 300 * taps["taps_epurse"] > 0
    assert rev["fares_priced"] > 0 and rev["fares_priced"] % 300 == 0
    assert "a flat 3.00 CNY per boarding" in out
    assert f"e-purse: {rev['epurse_fares'] / 100:,.2f} CNY" in out
    assert "QuickPass: priced" in out and "cash not counted" in out


def test_the_summary_shows_epurse_revenue_beside_quickpass(capsys: pytest.CaptureFixture[str],
                                                           tmp_path: Path) -> None:
    code, out, _ = run_cli(capsys, "sim", "--city", CITY, "--hours", "2", "--start", "6",
                           "--out", str(tmp_path / "r"), "--workers", "1")
    assert code == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["pricing"]["source"] == "fare tables"
    assert "GTFS-Fares v2" in out
    rev = report["revenue_fen"]
    assert rev["epurse_fares"] > 0
    revenue = next(line for line in out.splitlines() if line.startswith("revenue"))
    assert f"priced {rev['fares_priced'] / 100:,.2f}" in revenue
    assert f"e-purse: {rev['epurse_fares'] / 100:,.2f} CNY paid at the gate" in revenue
