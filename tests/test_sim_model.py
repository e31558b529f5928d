"""The fleet model end to end, through the real kernel calibration, fare engine and core."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from sim.city import fleet, load_city
from sim.config import MAX_SHARDS, SimConfig
from sim.connectivity import LinkConfig
from sim.demand import DemandProfile
from sim.population import PopulationConfig
from sim.report import deterministic
from sim.runner import expected_boardings, plan_shards
from sim.simulate import (
    MIN_AUTO_SHARDS,
    RIDERS_PER_SHARD,
    SimRun,
    auto_shards,
    prepare,
    simulate,
)
from tests.sim_support import CALIBRATION_DIR, SMALL_CITY, small_config

_RUNS: dict[tuple[Any, ...], SimRun] = {}


def run(city: str = SMALL_CITY, workers: int = 1, **changes: Any) -> SimRun:
    key = (city, workers, tuple(sorted(changes.items())))
    if key not in _RUNS:
        _RUNS[key] = simulate(city, small_config(**changes), workers=workers,
                              calibration_dir=CALIBRATION_DIR)
    return _RUNS[key]


def test_same_seed_same_report_other_seed_other_report() -> None:
    a = deterministic(run(seed=7).report)
    b = deterministic(simulate(SMALL_CITY, small_config(seed=7),
                               calibration_dir=CALIBRATION_DIR).report)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    c = deterministic(run(seed=8).report)
    assert c["taps"] != a["taps"]


def test_workers_do_not_change_the_result() -> None:
    one = deterministic(run(seed=3).report)
    two = deterministic(run(seed=3, workers=2).report)
    assert json.dumps(one, sort_keys=True) == json.dumps(two, sort_keys=True)


def test_taps_flow_through_the_core_and_the_ledger_balances() -> None:
    r = run(seed=11).report
    taps = r["taps"]
    assert taps["total"] > 500
    # Every tap is an accepted QuickPass tap, an e-purse purchase, or refused at the gate;
    # the accepted QuickPass taps all reach the core (nothing is lost in journals or queues).
    assert taps["taps_quickpass"] + taps["taps_epurse"] + taps["declined_at_gate"] == taps["total"]
    assert taps["core_accepted"] + taps["core_rejected"] == taps["taps_quickpass"]
    assert taps["core_rejected"] == 0 and taps["core_duplicates"] == 0
    # The zero cryptograms of calibrated taps never reach the issuer.
    assert "forged_cryptogram" not in r["core"]["alerts"]
    rev = r["revenue_fen"]
    assert rev["fares_priced"] > 0
    # After the day closes every fare is charged or owed; later it is recovered or lost.
    assert rev["fares_priced"] == rev["charged_by_day_close"] + rev["at_risk_after_day_close"]
    assert rev["at_risk_after_day_close"] == (rev["recovered_after_day"] + rev["lost_first_ride"]
                                              + rev["still_outstanding"])


def test_lifecycle_states_cause_their_declines() -> None:
    r = run(seed=11).report
    denied = {k.split()[0] for k in r["declines"]["deny_list_additions_by_reason"]}
    charged = {k.split()[0] for k in r["declines"]["charges_by_issuer"]}
    # not activated, lost, dormant, insufficient funds: verification or charge declined
    assert {"78", "41", "57", "51"} <= denied, denied
    assert {"78", "41", "57", "51"} <= charged, charged
    gate = r["declines"]["at_gate"]
    assert gate.get("kernel: card-expired", 0) > 0  # the kernel's own date check
    assert gate.get("deny-listed at the validator", 0) > 0
    assert r["deny_list"]["additions"] > 0
    assert r["revenue_fen"]["lost_first_ride"] > 0  # lost and unactivated cards never pay


def test_no_outages_no_journal_and_instant_deny_list() -> None:
    r = run(seed=5, link=LinkConfig(law="none", latency=0.2)).report
    assert r["uplink"]["outages"] == 0 and r["uplink"]["journaled_taps"] == 0
    assert r["deny_list"]["propagation_s"]["to_all_buses_max"] == pytest.approx(0.2)


def test_outages_journal_taps_and_delay_the_deny_list() -> None:
    r = run(seed=5, link=LinkConfig(mean_up=600.0, mean_down=600.0)).report
    assert r["uplink"]["journaled_taps"] > 0
    assert r["uplink"]["backlog_max_journal_taps"] > 0
    assert r["deny_list"]["propagation_s"]["to_all_buses_max"] > 60
    # Journaled taps still all arrive: accepted QuickPass taps == what the core took.
    taps = r["taps"]
    assert taps["core_accepted"] == taps["taps_quickpass"]


def test_report_states_latency_source_and_percentiles() -> None:
    r = run(seed=11).report
    lat = r["tap_latency_ms"]
    assert 40 < lat["p50"] <= lat["p95"] <= lat["p99"] < 1000
    src = r["latency_source"]
    assert src["fidelity"] == "calibrated" and "real kernel taps" in src["statement"]
    classes = src["calibration"]["classes"]
    assert classes["ss-sm"]["oda"] == "fdda-sm2" and classes["bank"]["oda"] == "fdda-rsa"
    assert classes["ss-sm/expired"]["reason"] == "card-expired"
    assert classes["ss-sm/epurse"]["epurse"] is True
    assert r["dwell_s"]["payment_increase"] > 0
    assert 0 < r["backoffice"]["utilisation"] < 1


def test_full_fidelity_runs_the_kernel_every_tap() -> None:
    r = run(seed=11, fidelity="full", hours=1.5).report
    assert r["latency_source"]["fidelity"] == "full"
    assert r["taps"]["total"] > 50
    assert r["taps"]["core_accepted"] > 0 and r["taps"]["core_rejected"] == 0
    assert "forged_cryptogram" not in r["core"]["alerts"]
    assert "replayed_atc" not in r["core"]["alerts"]


def test_cash_only_riders_make_no_taps() -> None:
    r = run(seed=2, population=PopulationConfig(cash=1.0)).report
    assert r["taps"]["total"] == 0 and r["taps"]["cash"] > 0
    assert r["dwell_s"]["served_stops"] > 0


def test_automatic_shards_follow_the_expected_riders() -> None:
    city = load_city("lanshan")
    small = SimConfig()
    assert small.shards is None  # the default: sized from the city
    assert auto_shards(city, fleet(city, None), small) == MIN_AUTO_SHARDS
    # The 10 M-tap day: 20,000 buses at 18 riders per stop-hour at the peak.
    day = SimConfig(buses=20_000, demand=DemandProfile(peak_rate=18.0))
    buses = fleet(city, 20_000)
    riders = expected_boardings(city, buses, day)
    k = auto_shards(city, buses, day)
    assert k == math.ceil(riders / RIDERS_PER_SHARD) and 30 <= k <= 60
    huge = SimConfig(buses=20_000, demand=DemandProfile(peak_rate=1_000.0))
    assert auto_shards(city, buses, huge) == MAX_SHARDS
    # prepare() cuts the fleet into that many jobs, each carrying the resolved count.
    p = prepare("lanshan", small_config(shards=None, hours=1.0), calibration_dir=CALIBRATION_DIR)
    assert len(p.jobs) == MIN_AUTO_SHARDS
    assert {job.cfg.shards for job in p.jobs} == {MIN_AUTO_SHARDS}


def test_shards_split_by_route_and_cover_every_bus() -> None:
    city = load_city("lanshan")
    buses = fleet(city, 100)
    plan = plan_shards(city, buses, 4)
    assert sorted(i for shard in plan for i in shard) == list(range(100))
    for shard in plan:
        units = {(buses[i].replica, city.blocks[buses[i].block].route_id) for i in shard}
        for other in plan:
            if other is not shard:
                assert not units & {(buses[i].replica, city.blocks[buses[i].block].route_id)
                                    for i in other}
