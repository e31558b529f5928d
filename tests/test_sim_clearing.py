"""E-purse clearing in the simulation, against the raw taps of a run.

A small run is made shard by shard with ``trace`` (every tap as it happened, with its purse
issuer) and each bus's outage history; the report's cleared, pending and refused figures are
then worked out again here: an e-purse purchase is pending when its bus's link was down at the
tap and stayed down past the end of the service period (the day's clearing cut-off), else it
reached the back office and clears.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from sim.model import ShardSim, TapTrace, _clear_full
from sim.population import HOME_ISSUER, OTHER_ISSUER, TUNION, Population, PopulationConfig
from sim.report import RunInfo, build, summary_rows
from sim.results import EPURSE, ShardResult, merge
from sim.runner import build_shard
from sim.simulate import prepare
from tests.sim_support import CALIBRATION_DIR, SMALL_CITY, small_config

GROUP = {HOME_ISSUER: "home", OTHER_ISSUER: "other_city"}


class Traced:
    """Every tap of a run and, per tap, whether its bus's link was down from it to past the
    horizon (from the links' own outage history, not from the model's journals)."""

    def __init__(self, **changes: Any) -> None:
        cfg = small_config(**changes)
        p = prepare(SMALL_CITY, cfg, calibration_dir=CALIBRATION_DIR)
        self.cfg = p.jobs[0].cfg
        self.taps: list[tuple[TapTrace, bool]] = []  # (tap, still offline at the cut-off)
        self.payers: set[tuple[int, int, str]] = set()  # (shard, card, purse issuer)
        results: list[ShardResult] = []
        self.sims: list[ShardSim] = []
        for job in p.jobs:
            sim = build_shard(job, trace=True)
            self.sims.append(sim)
            results.append(sim.run())
            assert sim.tap_log is not None
            for t in sim.tap_log:
                starts, ends = sim.links._starts[t.bus], sim.links._ends[t.bus]
                late = any(s <= t.time < e and e > self.cfg.horizon
                           for s, e in zip(starts, ends, strict=True))
                self.taps.append((t, late))
                if t.path == EPURSE:
                    self.payers.add((job.shard, t.card, t.purse_issuer))
        self.result = merge(results)
        info = RunInfo(city="small", city_source=SMALL_CITY, routes=3, stops=8, patterns=6,
                       blocks=6, buses=len(p.buses), replicas=1, shards=len(p.jobs), workers=1,
                       tap_off_routes=())
        self.report = build(self.result, self.cfg, p.calibration, info, 1.0)
        self.clearing = self.report["revenue_fen"]["by_payment_path"]["epurse"]["clearing"]

    def expected(self) -> dict[str, Counter[str]]:
        """Per issuer group: fen paid at the gate, and the part still offline at the cut-off."""
        out: dict[str, Counter[str]] = {g: Counter() for g in GROUP.values()}
        for t, late in self.taps:
            if t.path == EPURSE:
                group = GROUP[t.purse_issuer]
                out[group]["paid"] += t.epurse_fare
                out[group]["pending" if late else "sent"] += t.epurse_fare
                out[group]["records"] += 1
        return out


@pytest.fixture(scope="module")
def calibrated() -> Traced:
    # Long outages, so some buses are still offline when the service period ends.
    from sim.connectivity import LinkConfig

    return Traced(seed=5, hours=3.0, link=LinkConfig(mean_up=1800.0, mean_down=1800.0))


def test_calibrated_clearing_recomputed_from_the_taps(calibrated: Traced) -> None:
    c, want = calibrated.clearing, calibrated.expected()
    assert "calibrated fidelity" in c["statement"]
    for group, w in want.items():
        got = c["by_issuer"][group]
        assert got["cleared"] + got["pending"] + got["refused"] == w["paid"]
        assert got["cleared"] == w["sent"] and got["pending"] == w["pending"]
        assert got["refused"] == 0  # calibrated: no TAC, nothing to refuse (by construction)
        assert (got["cleared_records"] + got["pending_records"]) == w["records"]
    # Both issuers' cards rode, and the cut-off left something pending (else the test
    # would not tell cleared from pending).
    assert want["home"]["paid"] > 0 and want["other_city"]["paid"] > 0
    assert c["total"]["pending"] > 0
    paid = sum(w["paid"] for w in want.values())
    assert paid == calibrated.report["revenue_fen"]["by_payment_path"]["epurse"][
        "fares_paid_at_gate"]
    owed = {p["issuer"]: p["owes"] for p in c["positions"]}
    assert owed == {HOME_ISSUER: want["home"]["sent"], OTHER_ISSUER: want["other_city"]["sent"]}
    assert {p["operator"] for p in c["positions"]} == {calibrated.cfg.operator_id}
    line = dict(summary_rows(calibrated.report))["e-purse clearing"]
    assert f"{OTHER_ISSUER} owes {calibrated.cfg.operator_id}" in line


def test_other_city_riders_at_about_the_configured_share(calibrated: Traced) -> None:
    cfg = calibrated.cfg.population
    payers = calibrated.payers  # cards that paid from their purse, each once
    n = len(payers)
    share = sum(1 for _, _, issuer in payers if issuer == OTHER_ISSUER) / n
    sigma = math.sqrt(cfg.other_city * (1 - cfg.other_city) / n)  # binomial spread
    assert abs(share - cfg.other_city) < 4 * sigma, (share, n)


def test_other_city_share_of_a_large_population_and_no_new_draws() -> None:
    cfg = PopulationConfig()
    n = 200_000
    pop = Population(cfg, n, np.random.default_rng(3))
    p = cfg.other_city * cfg.tunion  # of all card holders
    sigma = math.sqrt(p * (1 - p) / n)
    assert abs(pop.other.mean() - p) < 4 * sigma
    assert (pop.path[pop.other] == TUNION).all()  # they pay from the purse
    # The other-city column costs no random draw: every other column is as without it.
    none = Population(replace(cfg, other_city=0.0), n, np.random.default_rng(3))
    assert not none.other.any()
    for col in ("kind", "path", "category", "state", "atc", "balance"):
        assert (getattr(pop, col) == getattr(none, col)).all(), col


def test_full_fidelity_clearing_verifies_every_tac_and_clears_what_was_sent() -> None:
    from sim.connectivity import LinkConfig

    run = Traced(seed=11, fidelity="full", hours=1.5,
                 link=LinkConfig(mean_up=1800.0, mean_down=1800.0))
    c, want = run.clearing, run.expected()
    assert "clearing.core.clear_day" in c["statement"]
    assert c["total"]["refused"] == 0 and c["refused_by_reason"] == {}
    for group, w in want.items():
        got = c["by_issuer"][group]
        assert got["cleared"] == w["sent"] and got["pending"] == w["pending"]
        assert got["cleared"] + got["pending"] + got["refused"] == w["paid"]
    # City B's purses were bought from with city B's purchase key and cleared with its TAC key.
    assert want["other_city"]["sent"] > 0 and want["home"]["sent"] > 0
    # The same records through the clearing core again, two of them altered: a TAC with a
    # flipped bit, and a city B purchase filed as city A's (the wrong issuer's TAC key).
    sim = run.sims[0]
    sent = list(sim.purse_sent)
    home = next(i for i, r in enumerate(sent) if r.result.epurse_issuer == HOME_ISSUER)
    other = next(i for i, r in enumerate(sent) if r.result.epurse_issuer == OTHER_ISSUER)
    tac = sent[home].result.epurse_tac
    assert tac is not None
    forged = f"{int(tac, 16) ^ 1:08X}"
    sent[home] = sent[home]._replace(result=dataclasses.replace(sent[home].result,
                                                                epurse_tac=forged))
    sent[other] = sent[other]._replace(result=dataclasses.replace(sent[other].result,
                                                                  epurse_issuer=HOME_ISSUER))
    decided = {r.tap_id: why for r, why in _clear_full(sent, "op", "2026-03-02", sim.t0)}
    assert decided.pop(sent[home].tap_id) == "tac-invalid"
    assert decided.pop(sent[other].tap_id) == "tac-invalid"
    assert set(decided.values()) == {None}
