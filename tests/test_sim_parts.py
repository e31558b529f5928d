"""The model's parts: demand, random draws, links and the deny list, kernel calibration."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from emv.card.profile import load_profile
from emv.kernel import Outcome
from sim.calibration import calibrate
from sim.connectivity import DenyView, LinkConfig, Links
from sim.demand import DemandProfile
from sim.errors import ConfigError
from sim.latency import PhysicalModel, card_pan, card_profile
from sim.population import CEMV, SS_SM, TUNION, Population, PopulationConfig
from sim.randoms import Uniforms

DAY = dt.date(2026, 3, 2)


def test_demand_peaks_and_integrates_to_the_rate() -> None:
    prof = DemandProfile(peak_rate=60.0, base=0.0, am=1.0, pm=0.0, am_width=1.0)
    table = prof.table()
    # The morning peak is the busiest hour and holds peak_rate x sqrt(2 pi) x width riders.
    assert table.expected(0, 30 * 3600) == pytest.approx(60.0 * np.sqrt(2 * np.pi), rel=1e-3)
    assert table.expected(7.5 * 3600, 8.5 * 3600) > table.expected(11 * 3600, 12 * 3600)
    assert table.expected(5.0, 5.0) == 0.0
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="--peak-rate"):
            DemandProfile(peak_rate=bad)


def test_bulk_draws_have_their_laws() -> None:
    u = Uniforms(np.random.default_rng(4))
    for lam in (0.3, 2.5, 12.0, 45.0):
        draws = np.array([u.poisson(lam) for _ in range(30_000)])
        assert draws.mean() == pytest.approx(lam, rel=0.03)
        assert draws.var() == pytest.approx(lam, rel=0.06)
    geo = np.array([u.geometric(1 / 6) for _ in range(30_000)])
    assert geo.min() == 1 and geo.mean() == pytest.approx(6.0, rel=0.03)
    assert np.mean([u.exponential(300.0) for _ in range(30_000)]) == pytest.approx(300, rel=0.03)


def test_population_shares() -> None:
    cfg = PopulationConfig(social_security=0.6, sm=0.7, tunion=0.25, senior=0.15)
    pop = Population(cfg, 100_000, np.random.default_rng(5))
    counts = pop.counts()
    assert counts["kind"]["ss-sm"] == pytest.approx(0.42 * 100_000, rel=0.03)
    assert counts["path"]["tunion"] == pytest.approx(0.25 * 100_000, rel=0.03)
    # Only social security cards carry a T-Union purse in the model.
    assert not ((pop.path == TUNION) & (pop.kind > 1)).any()
    assert counts["state"]["lost"] == pytest.approx(300, rel=0.25)
    assert (pop.path[pop.kind == SS_SM] == CEMV).mean() == pytest.approx(1 - 0.25 / 0.6, abs=0.02)
    with pytest.raises(ConfigError, match="share"):
        PopulationConfig(cash=1.5)


def test_deny_list_reaches_a_bus_after_its_outage() -> None:
    links = Links(LinkConfig(latency=0.5), buses=2)
    deny = DenyView(links)
    links.go_down(1, now=100.0, until=400.0)
    deny.add("tok", now=200.0)
    assert deny.refuses(0, "tok", 201.0)  # bus 0 was online: it has the entry 0.5 s later
    assert not deny.refuses(0, "tok", 200.2)
    assert not deny.refuses(1, "tok", 399.0)  # bus 1 hears of it when its link is back
    assert deny.refuses(1, "tok", 400.6)
    prop = links.propagation(200.0)
    assert list(prop) == pytest.approx([0.5, 200.5])
    deny.remove("tok", now=500.0)
    assert not deny.refuses(0, "tok", 501.0)


@given(st.lists(st.tuples(st.floats(0, 1e4), st.floats(1, 600)), max_size=20),
       st.floats(0, 2e4))
def test_a_message_is_never_delivered_inside_an_outage(outages: list[tuple[float, float]],
                                                       published: float) -> None:
    links = Links(LinkConfig(latency=0.0), buses=1)
    t = 0.0
    spans = []
    for gap, length in outages:
        start = t + gap
        links.go_down(0, start, start + length)
        spans.append((start, start + length))
        t = start + length
    at = links.delivered(0, published)
    assert at >= published
    assert not any(s < at < e for s, e in spans)


def test_physical_model_arithmetic() -> None:
    m = PhysicalModel(retransmit_p=0.0)
    base = m.off_host(commands=8, wire_bytes=900, oda="none", cryptogram=False)
    assert base == pytest.approx(0.012 + 8 * (0.0006 + 0.004) + (900 + 48) * 9 / 106_000)
    assert m.off_host(8, 900, "fdda-sm2", True) == pytest.approx(base + 0.006 + 0.045)
    assert m.off_host(4, 200, "none", False, epurse=True) > m.off_host(4, 200, "none", False)
    with pytest.raises(ConfigError, match="bitrate"):
        PhysicalModel(bitrate=0.0)


def test_calibration_measures_the_kernel_and_is_reused(tmp_path: Path) -> None:
    a = calibrate(DAY, 10, 200, b"t" * 16, directory=tmp_path)
    assert a.source == "measured" and a.path is not None
    classes = a.classes
    assert classes["ss-sm"].oda == "fdda-sm2" and classes["ss-rsa"].oda == "fdda-rsa"
    assert classes["bank/expired"].outcome is Outcome.DECLINED
    assert classes["ss-rsa/epurse"].epurse and not classes["ss-rsa/epurse-short"].epurse
    assert classes["ss-sm/epurse-short"].commands > classes["ss-sm/epurse"].commands
    b = calibrate(DAY, 10, 200, b"t" * 16, directory=tmp_path)
    assert b.source == "cached"
    assert all((a.classes[k].host_seconds == b.classes[k].host_seconds).all() for k in classes)
    c = calibrate(DAY, 10, 200, b"t" * 16, directory=tmp_path, recalibrate=True)
    assert c.source == "measured"


def test_simulated_cards_get_their_own_valid_pans() -> None:
    base = load_profile("sscard3-sm")
    pans = {card_pan(base.pan, 3, i) for i in range(500)}
    assert len(pans) == 500
    card = card_profile(base, card_pan(base.pan, 3, 7), expiry=DAY, category="adult")
    assert card.pan.startswith(base.pan[:8]) and card.expiry == DAY
    assert card.holder is not None and card.holder.category == "adult"
