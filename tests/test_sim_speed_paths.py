"""The simulation's fast paths give what the plain code gives, and a shard lets go of its day.

Each shortcut taken for throughput (sim/README.md, "Throughput") is checked against the
straightforward computation it replaces.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gc
import weakref

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from backoffice.taps import Action, TapRecord
from emv.kernel import Outcome, TapResult
from emv.pan import luhn_ok, with_luhn_digit
from sim.connectivity import LinkConfig, Links
from sim.coreapi import SimCard, SimTap
from sim.demand import DemandProfile
from sim.latency import card_pan
from sim.runner import ShardJob, build_shard, run_shard
from sim.simulate import prepare
from terminal.decisions import TapPolicy, decide
from tests.sim_support import CALIBRATION_DIR, SMALL_CITY, small_config

TZ = dt.timezone(dt.timedelta(hours=8))


@settings(deadline=None)
@given(st.floats(min_value=-3600.0, max_value=40 * 3600.0, allow_nan=False))
def test_demand_table_reads_the_same_doubles_as_numpy(t: float) -> None:
    table = DemandProfile(peak_rate=17.0).table()
    cum = np.asarray(table._cum)  # the table as numpy scalars, read the way it used to be
    x = min(max(t, 0.0), 30 * 3600.0) / 60.0
    i = min(int(x), len(cum) - 2)
    assert table.at(t) == float(cum[i] + (cum[i + 1] - cum[i]) * (x - i))


def test_link_state_kept_twice_agrees() -> None:
    links = Links(LinkConfig(), 3)
    links.go_down(1, 100.0, 400.0)
    assert [links.is_up(b, 200.0) for b in range(3)] == [True, False, True]
    assert [bool(links.down_until[b] <= 200.0) for b in range(3)] == [True, False, True]
    links.come_up(1)
    assert links.is_up(1, 400.0) and links.down_until[1] == 0.0


def _job(**changes: object) -> ShardJob:
    return prepare(SMALL_CITY, small_config(**changes), calibration_dir=CALIBRATION_DIR).jobs[0]


def test_tap_record_built_slot_by_slot_is_the_dataclass() -> None:
    sim = build_shard(_job())
    card = SimCard(index=3, pan="6231000000000000017", psn="01", token="ab" * 16,
                   masked="623100*********0017", scheme="tdes", kind="bank", state="active",
                   category="senior", expiry=dt.date(2030, 1, 1), issuer_master_key=bytes(16))
    tap = SimTap("V00-00001:7", "V00-00001", card, dt.datetime(2026, 3, 2, 8, tzinfo=TZ), "S1",
                 "R1", "tap_off", 41, bytes(range(8)), b"data", "cemv")
    fast = sim.core.record(tap)  # type: ignore[attr-defined]  # RealCore's, not the protocol's
    plain = TapRecord(tap_id=tap.tap_id, validator_id=tap.validator_id,
                      operator_id=sim.cfg.operator_id, pan_token=card.token,
                      masked_pan=card.masked, time=tap.time, stop_id="S1", route_id="R1",
                      action=Action.TAP_OFF, atc=41, arqc=tap.arqc, ac_data=b"data",
                      scheme="tdes", rider_category="senior", fare_media="cemv")
    assert fast == plain
    assert dataclasses.astuple(fast) == dataclasses.astuple(plain)


def test_kept_verdicts_are_the_terminals() -> None:
    sim = build_shard(_job())
    results = [TapResult(outcome=o, reason=r, oda="fdda", oda_ok=ok)
               for o, r, ok in [(Outcome.APPROVED_OFFLINE, None, True),
                                (Outcome.ONLINE_REQUEST, None, True),
                                (Outcome.ONLINE_REQUEST, None, False),
                                (Outcome.DECLINED, "expired", None)]]
    for _ in range(2):  # the second round comes from the memo
        for result in results:
            for listed in (False, True):
                assert sim._decide(result, listed) == decide(
                    result, deny_listed=listed, duplicate=False, policy=TapPolicy())


def test_a_finished_shard_is_freed_by_reference_counting() -> None:
    job = _job()
    was = gc.isenabled()
    gc.disable()
    try:
        sim = build_shard(job)
        sim.run()
        model, core = weakref.ref(sim), weakref.ref(sim.core)
        del sim
        assert model() is None and core() is None  # no cycle kept them: no collector needed
    finally:
        if was:
            gc.enable()


def test_run_shard_restores_the_collector() -> None:
    job = _job()
    assert gc.isenabled()
    result = run_shard(job)
    assert gc.isenabled()
    assert result.taps > 0


@given(st.text(alphabet="0123456789", min_size=6, max_size=19),
       st.integers(min_value=0, max_value=250), st.integers(min_value=0, max_value=10**9))
def test_card_pans_carry_the_luhn_digit_emv_pan_gives(prefix: str, shard: int,
                                                       index: int) -> None:
    pan = card_pan(prefix, shard, index)
    assert pan == with_luhn_digit(f"{prefix[:8]}{shard % 100:02d}{index:08d}")
    assert luhn_ok(pan)
