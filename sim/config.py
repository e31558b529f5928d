"""Every parameter of a simulation run, with its default, in one frozen value.

The defaults describe one ordinary weekday of the shipped sample city and are chosen so
``tapsim sim`` finishes in seconds on a laptop.  The same value goes to every worker
process (it pickles), so all shards run under the same rules.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Literal

from sim.connectivity import LinkConfig
from sim.demand import DemandProfile
from sim.dwell import DwellConfig
from sim.errors import ConfigError
from sim.latency import PhysicalModel
from sim.population import PopulationConfig
from sim.queueing import ServiceLaw

Fidelity = Literal["calibrated", "full"]

DEFAULT_DATE = dt.date(2026, 3, 2)  # a Monday: results do not depend on today's date


@dataclass(frozen=True, slots=True)
class BackOfficeModel:
    servers: int = 2
    service: ServiceLaw = field(default_factory=ServiceLaw)

    def __post_init__(self) -> None:
        if self.servers < 1:
            raise ConfigError(f"backoffice.servers must be at least 1, got {self.servers}")


MAX_SHARDS = 99
MAX_BUSES = 100_000  # 5x the 10 M-tap day: past it, 99 shards hold over a gigabyte each
MAX_FLAT_FARE = 100_000  # fen: 1,000 CNY a ride is a typing error, not a tariff


@dataclass(frozen=True, slots=True)
class SimConfig:
    hours: float = 18.0  # simulated span, from ``start_hour``
    start_hour: float = 5.0
    date: dt.date = DEFAULT_DATE
    seed: int = 1
    buses: int | None = None  # None: the city's own blocks
    fidelity: Fidelity = "calibrated"
    calibration_samples: int = 200  # real kernel taps per card class at start-up
    # Route groups, each with its own core and riders (see sim/README.md); None: sized from
    # the expected riders by sim.simulate.auto_shards, so a big city never gets shards that
    # hold millions of taps in one worker's memory.
    shards: int | None = None
    capacity: int = 80  # riders per bus
    kernel_amount: int = 200  # fen: the amount the validator offers the card in the PDOL
    operator_id: str = "tapsim-bus"
    sample_every: float = 60.0  # s between samples of the uplink backlog
    settle_days: int = 14  # after the day: close aggregates, recover debts this long
    demand: DemandProfile = field(default_factory=DemandProfile)
    dwell: DwellConfig = field(default_factory=DwellConfig)
    latency: PhysicalModel = field(default_factory=PhysicalModel)
    population: PopulationConfig = field(default_factory=PopulationConfig)
    link: LinkConfig = field(default_factory=LinkConfig)
    backoffice: BackOfficeModel = field(default_factory=BackOfficeModel)
    # fen (CNY) a ride for a city whose feed has no fare tables; None: such a city is refused
    # rather than priced at a fare nobody chose (see sim.core.pricing)
    flat_fare: int | None = None

    def __post_init__(self) -> None:
        if not 0 < self.hours <= 30:
            raise ConfigError(f"--hours must be in (0, 30], got {self.hours}")
        if not 0 <= self.start_hour < 24:
            raise ConfigError(f"start hour must be 0..24, got {self.start_hour}")
        if self.fidelity not in ("calibrated", "full"):
            raise ConfigError(f"--fidelity must be calibrated or full, not {self.fidelity!r}")
        if self.calibration_samples < 10:
            raise ConfigError("calibration needs at least 10 kernel taps per class")
        if self.shards is not None and not 1 <= self.shards <= MAX_SHARDS:
            raise ConfigError(f"shards must be 1..{MAX_SHARDS}, got {self.shards}")
        if self.capacity < 1:
            raise ConfigError("bus capacity must be at least 1")
        if self.kernel_amount < 0:
            raise ConfigError("kernel amount must not be negative")
        if self.sample_every <= 0:
            raise ConfigError("sample_every must be positive")
        if not 0 <= self.settle_days <= 14:
            raise ConfigError("settle_days must be 0..14 (the scheme's recovery window)")
        if self.buses is not None and not 1 <= self.buses <= MAX_BUSES:
            raise ConfigError(f"--buses must be 1..{MAX_BUSES:,}, got {self.buses}")
        if self.flat_fare is not None and not 0 <= self.flat_fare <= MAX_FLAT_FARE:
            raise ConfigError(f"--flat-fare must be 0..{MAX_FLAT_FARE} fen, got {self.flat_fare}")
        if self.seed < 0:
            raise ConfigError(f"--seed must not be negative, got {self.seed}")

    @property
    def start(self) -> float:
        return self.start_hour * 3600.0

    @property
    def horizon(self) -> float:
        return self.start + self.hours * 3600.0
