"""The report's figures against the raw events of a run, and its plots read as matplotlib
objects.

A small run is made shard by shard with ``trace`` (every tap as it happened) and with the
core's raw outcomes recorded (every charge, decline, recovery and write-off with its amount);
each figure of the report is then worked out again here from that raw data, in the test's own
way, and compared with what ``report.json`` says.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any

import numpy as np
import pytest

from sim import report as rep
from sim.connectivity import LinkConfig, Links
from sim.demand import DemandProfile
from sim.model import ShardSim, TapTrace
from sim.report import PATH_LABELS, RunInfo, build, figures
from sim.results import (
    LATENCY_BIN,
    PAYMENT_PATHS,
    ShardResult,
    merge,
)
from sim.runner import build_shard
from sim.simulate import prepare, simulate
from tests.sim_support import CALIBRATION_DIR, SMALL_CITY, small_config

# --- uplink statistics: the service period only -----------------------------------------


def test_outages_and_down_time_are_clipped_to_service_hours_exactly() -> None:
    """A hand-built outage history, service from 100 s to 1,000 s."""
    links = Links(LinkConfig(), buses=2, service=(100.0, 1000.0))
    links.go_down(0, 100.0, 150.0)  # in progress when service starts: 50 s
    links.go_down(0, 300.0, 400.0)  # inside: 100 s
    links.go_down(0, 950.0, 1100.0)  # running past the end: 50 s
    links.go_down(0, 1000.0, 1200.0)  # begins as service ends: not counted
    links.go_down(1, 2000.0, 2100.0)  # in the drain: not counted
    assert links.outages == 3
    assert links.down_seconds == pytest.approx(200.0)
    whole = Links(LinkConfig(), buses=1, service=(100.0, 1000.0))
    whole.go_down(0, 100.0, 5000.0)  # down all through service
    assert whole.outages == 1 and whole.down_seconds == pytest.approx(900.0)


def _down_fraction_sd(mean_up: float, mean_down: float, seconds: float, buses: int) -> float:
    """Standard deviation of the fraction of time down over ``seconds``, averaged over
    ``buses`` independent links, each a stationary two-state Markov chain (exponential up
    and down periods, as LinkConfig's "exp" law).  For such a chain with down probability
    p and rate sum l = 1/mean_up + 1/mean_down, Cov(D(s), D(s+u)) = p(1-p) e^(-l u), so the
    time down over T has variance 2 p (1-p) (T/l - (1 - e^(-l T))/l^2)."""
    p = mean_down / (mean_up + mean_down)
    lam = 1 / mean_up + 1 / mean_down
    var_time = 2 * p * (1 - p) * (seconds / lam - (1 - math.exp(-lam * seconds)) / lam ** 2)
    return math.sqrt(var_time / buses) / seconds


def _outages_sd(mean_up: float, mean_down: float, seconds: float, buses: int) -> float:
    """Standard deviation of the outage count: a renewal process whose cycle (up + down) has
    mean m = mean_up + mean_down and variance s2 = mean_up^2 + mean_down^2 (exponentials)
    has Var N(T) ~ T s2 / m^3 (the renewal central limit theorem)."""
    m = mean_up + mean_down
    return math.sqrt(buses * seconds * (mean_up ** 2 + mean_down ** 2) / m ** 3)


def test_down_fraction_converges_to_the_configured_value() -> None:
    """Before the fix, the links' cycling through the 6 h drain after service was counted
    over the service hours: 2.5x the configured fraction here (issue 16: 0.281 for 0.04)."""
    mean_up, mean_down, buses = 600.0, 300.0, 300
    cfg = small_config(buses=buses, seed=4, link=LinkConfig(mean_up=mean_up, mean_down=mean_down),
                       demand=DemandProfile(peak_rate=1.0))
    report = simulate(SMALL_CITY, cfg, calibration_dir=CALIBRATION_DIR).report
    up = report["uplink"]
    wall = report["wall"]  # (and the run's CPU seconds, by phase, beside its wall clock)
    assert wall["phases_cpu_s"].keys() == {"setup", "day", "drain", "settle"}
    assert wall["prepare_cpu_s"] >= 0 and 0 < wall["prepare_wall_s"] <= wall["seconds"]
    seconds = cfg.hours * 3600.0
    configured = mean_down / (mean_up + mean_down)
    assert up["down_fraction_configured"] == pytest.approx(configured, abs=1e-5)
    assert up["period"]["seconds"] == seconds and up["period"]["from"] == "06:00"
    # Four standard deviations of the model's own law (a 1-in-15,000 chance of a false alarm).
    assert abs(up["down_fraction"] - configured) < 4 * _down_fraction_sd(
        mean_up, mean_down, seconds, buses)
    # Outages overlapping service: one in progress at the start with probability p, then
    # one a cycle (mean_up + mean_down) on average.
    expected = buses * (configured + seconds / (mean_up + mean_down))
    assert abs(up["outages"] - expected) < 4 * _outages_sd(mean_up, mean_down, seconds, buses)


# --- a traced run: every figure recomputed from the raw events --------------------------


class Traced:
    """A run made shard by shard with every tap and every core outcome kept."""

    def __init__(self, **changes: Any) -> None:
        cfg = small_config(**changes)
        p = prepare(SMALL_CITY, cfg, calibration_dir=CALIBRATION_DIR)
        self.cfg = p.jobs[0].cfg
        self.taps: list[TapTrace] = []
        self.outcomes: list[tuple[str, Any]] = []  # (phase, backoffice Outcome)
        self.outage_history: list[tuple[list[float], list[float]]] = []  # per bus
        results: list[ShardResult] = []
        for job in p.jobs:
            sim = build_shard(job, trace=True)
            self._record(sim)
            results.append(sim.run())
            assert sim.tap_log is not None
            self.taps += sim.tap_log
            self.outage_history += [(list(s), list(e)) for s, e in
                                    zip(sim.links._starts, sim.links._ends, strict=True)]
        self.result = merge(results)
        info = RunInfo(city="small", city_source=SMALL_CITY, routes=3, stops=8, patterns=6,
                       blocks=6, buses=len(p.buses), replicas=1, shards=len(p.jobs), workers=1,
                       tap_off_routes=())
        self.report = build(self.result, self.cfg, p.calibration, info, 1.0)

    def _record(self, sim: ShardSim) -> None:
        core: Any = sim.core
        phase = ["day"]
        reply = core._reply

        def recorded(res: Any) -> Any:
            self.outcomes.extend((phase[0], e) for e in res.events)
            return reply(res)

        core._reply = recorded
        for name in ("close_day", "recover"):
            method = getattr(core, name)

            def in_phase(*args: Any, _m: Any = method, _n: str = name) -> Any:
                phase[0] = _n
                return _m(*args)

            setattr(core, name, in_phase)


@pytest.fixture(scope="module")
def traced() -> Traced:
    return Traced(seed=21, hours=3.0)


def _close(*figs: Any) -> None:
    import matplotlib.pyplot as plt  # after sim.report.figures chose the Agg backend

    for fig in figs:
        plt.close(fig)


def _nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(math.ceil(q * len(ordered)) - 1, 0)]


def test_tap_counts_and_latency_by_payment_path(traced: Traced) -> None:
    lat = traced.report["tap_latency_by_payment_path_ms"]
    assert set(lat) == set(PAYMENT_PATHS)
    by_path: dict[str, list[float]] = {name: [] for name in PAYMENT_PATHS}
    for t in traced.taps:
        by_path[PAYMENT_PATHS[t.path]].append(t.latency)
    assert all(by_path[name] for name in PAYMENT_PATHS), "the run must exercise every path"
    for name, values in by_path.items():
        assert lat[name]["taps"] == len(values)
        for q in (0.50, 0.95, 0.99):
            raw_ms = 1e3 * _nearest_rank(values, q)
            # the report gives the upper edge of the 0.1 ms bin holding the quantile
            reported = lat[name][f"p{round(q * 100)}"]
            assert reported - 1e3 * LATENCY_BIN - 1e-6 <= raw_ms <= reported + 1e-6, (name, q)
        # the mean of bin midpoints is within half a bin of the raw mean
        assert lat[name]["mean"] == pytest.approx(1e3 * float(np.mean(values)),
                                                  abs=1e3 * LATENCY_BIN / 2 + 1e-3)
    taps = traced.report["taps"]
    kinds = Counter(PAYMENT_PATHS[t.path] for t in traced.taps)
    assert taps["total"] == len(traced.taps)
    assert taps["taps_epurse"] == kinds["epurse"]
    assert taps["taps_quickpass"] == kinds["quickpass_online"] + kinds["quickpass_offline"]
    assert taps["declined_at_gate"] == kinds["declined_at_gate"]
    # offline QuickPass taps are exactly the journaled ones
    assert traced.report["uplink"]["journaled_taps"] == kinds["quickpass_offline"]


def test_revenue_by_payment_path(traced: Traced) -> None:
    paths = traced.report["revenue_fen"]["by_payment_path"]
    qp, ep = paths["quickpass_aggregate"], paths["epurse"]
    assert ep["fares_paid_at_gate"] == sum(t.epurse_fare for t in traced.taps) > 0
    assert ep["refunds_owed"] == sum(t.epurse_refund for t in traced.taps)

    def amount(kind: str, phases: tuple[str, ...]) -> int:
        return sum(e.amount for ph, e in traced.outcomes if e.kind == kind and ph in phases)

    by_close = ("day", "close_day")
    assert qp["charged_by_day_close"] == amount("charged", by_close) > 0
    # what was priced is what was charged or became a debt by the day close
    assert qp["fares_priced"] == amount("charged", by_close) + amount("declined", by_close)
    assert qp["recovered_after_day"] == amount("recovered", ("recover",))
    assert qp["lost_first_ride"] == amount("written_off", (*by_close, "recover"))
    total = qp["fares_priced"] + ep["fares_paid_at_gate"]
    assert paths["share_of_fares_pct"]["epurse"] == pytest.approx(
        100 * ep["fares_paid_at_gate"] / total, abs=0.005)


def test_each_refusal_is_counted_once(traced: Traced) -> None:
    ref = traced.report["declines"]["refusals"]
    refused = [t.refusal for t in traced.taps if t.refusal is not None]
    declined = Counter(e.code for _, e in traced.outcomes if e.kind == "declined")
    assert refused and declined
    assert sum(ref["taps_refused_at_validator"].values()) == len(refused)
    assert len(ref["taps_refused_at_validator"]) == len(set(refused))  # one label a reason
    assert {k.split()[0]: v for k, v in ref["charges_declined_by_bank"].items()} == declined
    # the chart: one bar per reason, their lengths summing to the refusals, once each
    fig = figures(traced.report, traced.result)["revenue_declines.png"]
    bars = fig.axes[1].patches
    assert len(bars) == len(ref["taps_refused_at_validator"]) + len(declined)
    assert sum(b.get_width() for b in bars) == len(refused) + sum(declined.values())
    _close(fig)


def test_uplink_figures_from_the_outage_history(traced: Traced) -> None:
    cfg, up = traced.cfg, traced.report["uplink"]
    start, end = cfg.start, cfg.horizon
    outages, down = 0, 0.0
    for starts, ends in traced.outage_history:
        for s, e in zip(starts, ends, strict=True):
            if s < end and e > start:
                outages += 1
                down += min(e, end) - max(s, start)
    assert any(s >= end for starts, _ in traced.outage_history for s in starts), \
        "the run must have outages in the drain, to show they are left out"
    assert up["outages"] == outages
    assert up["down_fraction"] == pytest.approx(down / (len(traced.outage_history)
                                                        * (end - start)), abs=1e-5)


def test_cpu_and_wall_clock_per_phase(traced: Traced) -> None:
    cpu, wall = traced.result.cpu, traced.result.wall
    assert set(cpu) == {"day", "drain", "settle"}  # (setup is timed by run_shard)
    for phase, seconds in cpu.items():
        assert 0 <= seconds <= wall[phase] + 0.05  # a thread's CPU time never beats its clock
    w = traced.report["wall"]
    assert w["phases_cpu_s"].keys() == cpu.keys() and "day_in_core" in w["phases_wall_s"]


# --- the plots and the page -------------------------------------------------------------


def test_plots_have_titles_units_and_every_payment_path(traced: Traced) -> None:
    figs = figures(traced.report, traced.result)
    for name, fig in figs.items():
        for ax in fig.axes:
            assert ax.get_title(), name
            assert re.search(r"\((ms|s|CNY, yuan)\)|\bper\b|sampled|count", ax.get_xlabel()
                             + " " + ax.get_ylabel()) or name in ("revenue_declines.png",
                                                                  "deny_propagation.png"), name
    lat = figs["tap_latency.png"].axes[0]
    assert lat.get_xlabel() == "tap latency (ms)"
    legend = [t.get_text() for t in lat.get_legend().get_texts()]
    assert [text.split(":")[0] for text in legend] == [PATH_LABELS[n] for n in PAYMENT_PATHS]
    money, refusals = figs["revenue_declines.png"].axes
    assert money.get_xlabel() == "fares (CNY, yuan)"
    entries = [t.get_text() for t in money.get_legend().get_texts()]
    assert any(e.startswith("QuickPass") for e in entries)
    assert any(e.startswith("e-purse") for e in entries)
    labels = [t.get_text() for t in money.get_yticklabels()]
    assert any("QuickPass" in x for x in labels) and any("e-purse" in x for x in labels)
    assert not any("_" in x for x in labels + entries)  # no field names
    # refusal labels: wrapped between words, never cut inside one
    ref = traced.report["declines"]["refusals"]
    wanted = list(ref["taps_refused_at_validator"]) + list(ref["charges_declined_by_bank"])
    assert [t.get_text().replace("\n", " ") for t in refusals.get_yticklabels()] == wanted
    backlog = figs["backlog.png"].axes[0]
    backlog.figure.canvas.draw()
    ticks = [t.get_text() for t in backlog.get_xticklabels() if t.get_text()]
    assert ticks and all(re.fullmatch(r"\d\d:\d\d", t) for t in ticks), ticks
    lines = [t.get_text() for t in backlog.get_legend().get_texts()]
    assert not any("back-office queue" in x for x in lines)  # it counts taps in flight too
    for fig in figs.values():
        _close(fig)


def test_page_shows_clock_times_epurse_revenue_and_the_period(tmp_path: Any) -> None:
    t = Traced(seed=5, hours=1.5, start_hour=7.5)
    rep.write(t.report, t.result, tmp_path)
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "07:30-09:00" in page and not re.search(r"\d\.\d+:\d\d", page)  # not "7.5:00"
    ep = t.report["revenue_fen"]["by_payment_path"]["epurse"]["fares_paid_at_gate"]
    assert f"{ep / 100:,.2f}" in page and "T-Union e-purse" in page
    assert "service hours only" in page
    for label in PATH_LABELS.values():
        assert label in page
    rows = dict(rep.summary_rows(t.report))
    assert "07:30-09:00" in rows["city"] and "e-purse" in rows["revenue"]
    assert "wall" not in dict(rep.summary_rows(t.report, machine=False))

