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
    assert "calibrated:" in out and str(tmp_path / "index.html") in out


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
