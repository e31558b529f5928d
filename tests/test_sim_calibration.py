"""The field calibration of service times and tap latency (issue 16, item 5), and its file.

Figures from outside, each with its source (sim/README.md, "Calibration", quotes them):

* TfL's contactless EMV taps on London buses, as Consult Hyperion reported TfL's data
  ("Real data on contactless EMV in transit", chyp.com, 2013-01-30): mean transaction time
  "around 530ms", a "545ms mode peak", "much smaller peaks at 420ms and 490ms" and "a long
  tail out over 900ms".  The source gives no share for the tail: the bounds below (0.1-2 %
  of taps past 900 ms) are this project's reading of "long tail", not a measured figure.
* The separate-door rule (TCQSM 3rd ed., ch. 6: the busier door stream sets the dwell):
  checked on a worked textbook exercise, since TCQSM's own example could not be read here.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from sim.calibration import calibrate
from sim.config import (
    CalibrationRef,
    SimConfig,
    calibration_path,
    load_calibration,
    shipped_calibrations,
    with_calibration,
)
from sim.dwell import DwellConfig, dwell
from sim.errors import ConfigError
from sim.latency import TFL_BUS_2013, LatencyMode, PhysicalModel, class_draw, field_sample
from sim.population import PopulationConfig
from sim.simulate import simulate
from tapsim.cli import main
from tests.sim_support import CALIBRATION_DIR, SMALL_CITY, small_config

# --- the TfL fit --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tfl_ms() -> np.ndarray:
    return field_sample(TFL_BUS_2013, np.random.default_rng(2013), 2_000_000) * 1e3


def _histogram(ms: np.ndarray, width: float) -> tuple[np.ndarray, np.ndarray]:
    counts, edges = np.histogram(ms, bins=np.arange(300.0, 1500.0 + width, width))
    return counts.astype(float), (edges[:-1] + edges[1:]) / 2


def test_tfl_fit_has_the_reported_mean(tfl_ms: np.ndarray) -> None:
    assert tfl_ms.mean() == pytest.approx(530.0, abs=10.0)  # "around 530ms"


def test_tfl_fit_peaks_at_the_reported_mode(tfl_ms: np.ndarray) -> None:
    counts, centres = _histogram(tfl_ms, 5.0)
    assert centres[counts.argmax()] == pytest.approx(545.0, abs=10.0)  # "545ms mode peak"


def test_tfl_fit_has_the_smaller_peaks(tfl_ms: np.ndarray) -> None:
    counts, centres = _histogram(tfl_ms, 5.0)
    top = counts.max()
    peaks = [(c, n) for i, (c, n) in enumerate(zip(centres, counts, strict=True))
             if 0 < i < len(counts) - 1 and n > counts[i - 1] and n >= counts[i + 1]
             and n > 0.1 * top]  # a peak, not a wiggle of the sampling noise in the tail
    for reported in (420.0, 490.0):  # "much smaller peaks at 420ms and 490ms"
        near = [n for c, n in peaks if abs(c - reported) <= 15.0]
        assert near, f"no peak near {reported} ms: {peaks}"
        assert max(near) < 0.6 * top


def test_tfl_fit_has_a_tail_beyond_900_ms(tfl_ms: np.ndarray) -> None:
    beyond = float((tfl_ms > 900.0).mean())
    assert 0.001 < beyond < 0.02  # "a long tail out over 900ms" (share: our reading)
    assert tfl_ms.min() >= min(m.shift_ms for m in TFL_BUS_2013)  # no tap below the floor


def test_the_vectorised_draws_follow_each_mode() -> None:
    # The mixture sampler against each mode's own closed form (mean and peak).
    rng = np.random.default_rng(7)
    for mode in TFL_BUS_2013:
        ms = field_sample((mode,), rng, 400_000) * 1e3
        assert ms.mean() == pytest.approx(mode.mean_ms, rel=0.005)
        assert np.median(ms) == pytest.approx(mode.shift_ms + mode.median_ms, rel=0.005)
    weights = np.array([m.weight for m in TFL_BUS_2013])
    means = np.array([m.mean_ms for m in TFL_BUS_2013])
    mixed = field_sample(TFL_BUS_2013, rng, 400_000) * 1e3
    assert mixed.mean() == pytest.approx(float(weights @ means / weights.sum()), rel=0.005)


def test_field_latency_reaches_the_simulated_taps() -> None:
    # Every tap on the QuickPass path draws from the fit: the run's mean is TfL's.
    cfg = small_config(population=PopulationConfig(cash=0.0, tunion=0.0, lost=0.0, dormant=0.0,
                                                   expired=0.0, insufficient=0.0,
                                                   not_activated=0.0))
    r = simulate(SMALL_CITY, cfg, calibration_dir=CALIBRATION_DIR).report
    assert r["taps"]["total"] > 500
    assert r["tap_latency_ms"]["mean"] == pytest.approx(530.0, abs=15.0)
    assert r["service_calibration"]["name"] == "field-2026"
    assert r["service_calibration"]["tap_latency_law"] == {"quickpass": "field",
                                                           "epurse": "kernel"}


def test_each_card_class_takes_its_paths_law() -> None:
    cal = calibrate(SimConfig().date, 20, 200, b"t" * 16, directory=CALIBRATION_DIR)
    model = PhysicalModel()
    rng = np.random.default_rng(3)

    def mean_ms(name: str) -> float:
        return float(class_draw(name, cal.classes[name], cal.classes, rng, model)(100_000)
                     .mean()) * 1e3

    field = float(field_sample(TFL_BUS_2013, rng, 100_000).mean()) * 1e3
    for kind in ("ss-sm", "ss-rsa", "bank"):
        assert mean_ms(kind) == pytest.approx(field, abs=3.0)
        assert mean_ms(f"{kind}/expired") == pytest.approx(field, abs=3.0)
    # A purse too short: the kernel's purse attempt, then a QuickPass tap from the field.
    short, plain = cal.classes["ss-sm/epurse-short"], cal.classes["ss-sm"]
    extra = float(np.median(short.latencies(model)) - np.median(plain.latencies(model))) * 1e3
    assert extra > 0
    assert mean_ms("ss-sm/epurse-short") == pytest.approx(field + extra, abs=3.0)
    # The purse itself keeps the kernel's model (no field figure).
    purse = cal.classes["ss-sm/epurse"].latencies(model).mean() * 1e3
    assert mean_ms("ss-sm/epurse") == pytest.approx(purse, rel=0.05)


def test_legacy_calibration_keeps_the_kernel_latency() -> None:
    cfg = with_calibration(small_config(population=PopulationConfig(cash=0.0, tunion=0.0)),
                           "legacy-2025")
    r = simulate(SMALL_CITY, cfg, calibration_dir=CALIBRATION_DIR).report
    assert r["tap_latency_ms"]["p99"] < 400  # the kernel model's ~0.2 s taps
    assert r["service_calibration"] == {
        "name": "legacy-2025", "source": "sim/calibrations/legacy-2025.toml",
        "tap_latency_law": {"quickpass": "kernel", "epurse": "kernel"}}


# --- the TCQSM door rule ------------------------------------------------------------------


def test_separate_doors_take_the_busier_stream() -> None:
    # A worked exercise (transport-engineering textbook problem, solved on askfilo.com:
    # "bus route using 42-seat buses has a total of 8 stops"): boarding through the front
    # door at 3 s a rider (3.5 s with standees), alighting through the rear at 2 s, doors
    # 5 s to open and 5 s to close; dwell = 10 s + the longer of the two streams.
    door = DwellConfig(t_alight=2.0, t_walk=3.0, door_time=10.0, validators=1,
                       alight_channels=1, simultaneous=True)
    assert dwell(door, 0, 35, 0.0) == pytest.approx(115.0)  # stop 1: 10 + 35 x 3
    assert dwell(door, 25, 20, 0.0) == pytest.approx(70.0)  # stop 4: 10 + max(50, 60)
    standees = replace(door, t_walk=3.5)
    assert dwell(standees, 40, 30, 0.0) == pytest.approx(115.0)  # stop 8: 10 + max(80, 105)
    assert DwellConfig().simultaneous  # the default


# --- the calibration files ----------------------------------------------------------------


def test_shipped_default_file_is_the_built_in_default() -> None:
    ref, dwell_cfg, latency = load_calibration("field-2026")
    assert ref == CalibrationRef("field-2026", "sim/calibrations/field-2026.toml")
    assert dwell_cfg == DwellConfig() and latency == PhysicalModel()
    assert SimConfig().service_calibration.name == "field-2026"
    assert {"field-2026", "legacy-2025"} <= set(shipped_calibrations())


def test_legacy_file_is_the_model_before_the_field_figures() -> None:
    # The defaults of sim/dwell.py and sim/latency.py before this calibration (git history).
    _, d, lat = load_calibration("legacy-2025")
    assert (d.t_walk, d.handle_cemv, d.handle_tunion, d.handle_cash) == (2.5, 0.6, 0.5, 1.5)
    assert d.simultaneous is False
    assert (lat.quickpass, lat.epurse) == ("kernel", "kernel")


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "city.toml"
    path.write_text('[calibration]\nname = "mine"\n' + text)
    return path


def test_a_partial_file_keeps_the_other_defaults(tmp_path: Path) -> None:
    path = _file(tmp_path, "[dwell]\nt_walk = 2\n[tap_latency]\nfield = [\n"
                 "  { weight = 1, shift_ms = 300, median_ms = 100, sigma = 0.25 },\n]\n")
    cfg = with_calibration(SimConfig(), path)
    assert cfg.dwell == replace(DwellConfig(), t_walk=2.0)
    assert cfg.latency.field == (LatencyMode(1.0, 300.0, 100.0, 0.25),)
    assert cfg.service_calibration == CalibrationRef("mine", str(path))


@pytest.mark.parametrize(("text", "says"), [
    ("[dwell]\nt_wlak = 2\n", "[dwell] unknown key 't_wlak'"),
    ("[dwel]\n", "unknown table [dwel]"),
    ("[dwell]\nt_walk = \"fast\"\n", "[dwell] t_walk: must be a float, got 'fast'"),
    ("[dwell]\nvalidators = 1.5\n", "[dwell] validators: must be an int"),
    ("[dwell]\nsimultaneous = 1\n", "[dwell] simultaneous: must be a bool"),
    ("[dwell]\nt_walk = -1\n", "dwell.t_walk must not be negative"),
    ("[tap_latency]\nquickpass = \"fast\"\n", "tap_latency.quickpass must be one of"),
    ("[tap_latency]\nfield = []\n", "[tap_latency] field: must be a non-empty list"),
    ("[tap_latency]\nfield = [{ weight = 1, shift_ms = 300, median_ms = 90 }]\n",
     "[tap_latency] field[0]: missing sigma"),
    ("[tap_latency]\nfield = [{ weight = 1, shift_ms = 300, median_ms = 90, sigma = 9 }]\n",
     "field[0]: tap_latency.field: sigma must be in (0, 3]"),
    ("[latency]\nbitrate = 0\n", "latency.bitrate must be positive"),
    ("[latency]\nquickpass = \"field\"\n", "[latency] unknown key 'quickpass'"),
    ("[calibration]\n", "not TOML"),  # the table twice
])
def test_a_bad_file_names_the_file_and_the_key(tmp_path: Path, text: str, says: str) -> None:
    path = _file(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_calibration(path)
    assert str(err.value).startswith(f"{path}: ")
    assert says in str(err.value)


def test_a_file_without_a_name_or_that_is_missing(tmp_path: Path) -> None:
    nameless = tmp_path / "x.toml"
    nameless.write_text("[dwell]\nt_walk = 2\n")
    with pytest.raises(ConfigError, match=r"x\.toml: \[calibration\] needs a name"):
        load_calibration(nameless)
    with pytest.raises(ConfigError, match="no such file, nor a shipped calibration "
                                          r"\(field-2026, legacy-2025"):
        calibration_path(tmp_path / "nowhere.toml")


def test_the_command_refuses_a_bad_config(capsys: pytest.CaptureFixture[str],
                                          tmp_path: Path) -> None:
    path = _file(tmp_path, "[dwell]\nhandle_qr = 1.0\n")
    code = main(["sim", "--config", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"{path}: [dwell] unknown key 'handle_qr'" in err
    assert not (tmp_path / "out").exists()
