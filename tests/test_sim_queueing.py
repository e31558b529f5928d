"""The back-office queue against queueing theory: Erlang C and the M/M/c mean wait."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.errors import ConfigError
from sim.queueing import Law, ServiceLaw, erlang_c, mmc_mean_wait, simulate_mmc


def test_erlang_c_textbook_values() -> None:
    # M/M/1: the probability of waiting is the utilisation.
    assert erlang_c(1, 0.7) == pytest.approx(0.7)
    # Two servers, one Erlang: C = 1/3 (P0 = 1/3, C = (a^2/2)(2/(2-1)) P0).
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    # Ten servers at eight Erlangs (a standard call-centre table value, 0.409).
    assert erlang_c(10, 8.0) == pytest.approx(0.4092, abs=1e-4)
    assert erlang_c(3, 3.0) == 1.0  # saturated: everyone waits


def test_mmc_mean_wait_formula() -> None:
    # M/M/1: Wq = rho / (mu - lambda).
    assert mmc_mean_wait(0.6, 1.0, 1) == pytest.approx(0.6 / 0.4)
    assert mmc_mean_wait(5.0, 1.0, 4) == math.inf
    assert mmc_mean_wait(0.0, 1.0, 2) == 0.0


@given(st.integers(1, 60), st.floats(0.0, 0.999))
def test_erlang_c_is_a_probability_rising_with_load(servers: int, rho: float) -> None:
    low = erlang_c(servers, rho * servers)
    high = erlang_c(servers, min(rho + 0.001, 0.9999) * servers)
    assert 0.0 <= low <= high <= 1.0


@pytest.mark.parametrize(("rate", "servers", "jobs", "seed"), [
    (2.8, 4, 400_000, 1),  # four servers at 70 %
    (0.6, 1, 200_000, 2),  # M/M/1 at 60 %
])
def test_simulated_mean_wait_matches_erlang_c_within_5_percent(
        rate: float, servers: int, jobs: int, seed: int) -> None:
    check = simulate_mmc(rate, 1.0, servers, jobs, seed=seed)
    assert check.relative_error < 0.05, (check.simulated_wait, check.formula_wait)
    assert check.utilisation == pytest.approx(rate / servers, rel=0.02)


def test_service_laws_have_their_mean() -> None:
    rng = np.random.default_rng(3)
    laws: tuple[Law, ...] = ("exp", "det", "lognormal")
    for law in laws:
        draw = ServiceLaw(law, per_message=0.004, per_tap=0.001).sampler(rng)
        mean = np.mean([draw(2) for _ in range(20_000)])
        assert mean == pytest.approx(0.004 + 0.002, rel=0.03), law


def test_bad_queue_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="servers"):
        erlang_c(0, 1.0)
    with pytest.raises(ConfigError, match="law"):
        ServiceLaw("uniform")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="negative"):
        ServiceLaw(per_message=-1.0)
