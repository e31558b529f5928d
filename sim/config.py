"""Every parameter of a simulation run, with its default, in one frozen value.

The defaults describe one ordinary weekday of the shipped sample city and are chosen so
``tapsim sim`` finishes in seconds on a laptop.  The same value goes to every worker
process (it pickles), so all shards run under the same rules.

Service times and tap latency (``dwell``, ``latency``) are a *calibration*: the defaults are
the field-2026 one, shipped as ``sim/calibrations/field-2026.toml`` beside the model's figures
before it (``legacy-2025``), and ``tapsim sim --config FILE|NAME`` reads another
(:func:`load_calibration`; the format is in sim/README.md, "Calibration").  The run carries
its name and source (``SimConfig.service_calibration``) into the report.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from sim.connectivity import LinkConfig
from sim.demand import DemandProfile
from sim.dwell import DwellConfig
from sim.errors import ConfigError
from sim.latency import LatencyMode, PhysicalModel
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


@dataclass(frozen=True, slots=True)
class CalibrationRef:
    """Which service-time and tap-latency calibration a run used, and where it was read."""

    name: str = "field-2026"
    source: str = "built-in defaults (the same as sim/calibrations/field-2026.toml)"


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
    service_calibration: CalibrationRef = field(default_factory=CalibrationRef)

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


# --- calibration files (``tapsim sim --config``) ------------------------------------------

CALIBRATIONS = Path(__file__).resolve().parent / "calibrations"
DEFAULT_CALIBRATION = "field-2026"
_TABLES = ("calibration", "dwell", "tap_latency", "latency")
_LAW_KEYS = ("quickpass", "epurse", "field")


def shipped_calibrations() -> list[str]:
    """Names of the calibrations shipped in ``sim/calibrations/``."""
    return sorted(p.stem for p in CALIBRATIONS.glob("*.toml"))


def calibration_path(spec: str | Path) -> Path:
    """A calibration file: ``spec`` itself if it is a file, else the shipped one so named."""
    path = Path(spec)
    if path.is_file():
        return path
    shipped = CALIBRATIONS / f"{spec}.toml"
    if isinstance(spec, str) and "/" not in spec and shipped.is_file():
        return shipped
    raise ConfigError(f"--config {spec}: no such file, nor a shipped calibration "
                      f"({', '.join(shipped_calibrations())})")


def _value(where: str, key: str, kind: str, value: object) -> object:
    """``value`` if it is of the field's TOML type (an integer is a fine float), else the
    error that says so."""
    ok = {"float": isinstance(value, int | float) and not isinstance(value, bool),
          "int": isinstance(value, int) and not isinstance(value, bool),
          "bool": isinstance(value, bool), "str": isinstance(value, str)}.get(kind)
    if ok is None:
        raise ConfigError(f"{where} {key}: cannot be set from a file")
    if not ok:
        article = "an" if kind == "int" else "a"
        raise ConfigError(f"{where} {key}: must be {article} {kind}, got {value!r}")
    return float(value) if kind == "float" else value  # type: ignore[arg-type]


def _fields(where: str, table: object, cls: type, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The keys of ``table`` as keyword arguments of dataclass ``cls``, each type-checked;
    a key ``cls`` has not (or one in ``skip``) is an error naming it."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table")
    kinds = {f.name: str(f.type) for f in dataclasses.fields(cls) if f.name not in skip}
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key not in kinds:
            raise ConfigError(f"{where} unknown key {key!r} (known: {', '.join(kinds)})")
        out[key] = _value(where, key, kinds[key], value)
    return out


def _modes(where: str, value: object) -> tuple[LatencyMode, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where} field: must be a non-empty list of modes "
                          "({ weight, shift_ms, median_ms, sigma })")
    out = []
    for i, mode in enumerate(value):
        spot = f"{where} field[{i}]"
        kw = _fields(spot, mode, LatencyMode)
        missing = [f.name for f in dataclasses.fields(LatencyMode) if f.name not in kw]
        if missing:
            raise ConfigError(f"{spot}: missing {', '.join(missing)}")
        try:
            out.append(LatencyMode(**kw))
        except ConfigError as exc:
            raise ConfigError(f"{spot}: {exc}") from None
    return tuple(out)


def load_calibration(spec: str | Path) -> tuple[CalibrationRef, DwellConfig, PhysicalModel]:
    """The calibration file ``spec`` (a path, or a shipped name): its name and source, dwell
    times and tap-latency model.  Keys it leaves out keep the built-in (field-2026) default;
    a key or table it should not have, a value of the wrong type or out of range is a
    :class:`ConfigError` naming the file, the table and the key."""
    path = calibration_path(spec)
    shipped = path.resolve().parent == CALIBRATIONS
    label = f"sim/calibrations/{path.name}" if shipped else str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{label}: cannot read it ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{label}: not TOML ({exc})") from None
    for table in data:
        if table not in _TABLES:
            raise ConfigError(f"{label}: unknown table [{table}] (known: {', '.join(_TABLES)})")
    head = data.get("calibration")
    if not isinstance(head, dict) or not isinstance(head.get("name"), str) or not head["name"]:
        raise ConfigError(f"{label}: [calibration] needs a name (a string)")
    for key in head:
        if key not in ("name", "description"):
            raise ConfigError(f"{label}: [calibration] unknown key {key!r} "
                              "(known: name, description)")
    try:
        dwell = DwellConfig(**_fields(f"{label}: [dwell]", data.get("dwell", {}), DwellConfig))
        table = data.get("tap_latency", {})
        if not isinstance(table, dict):
            raise ConfigError(f"{label}: [tap_latency]: must be a table")
        law = dict(table)
        modes = _modes(f"{label}: [tap_latency]", law.pop("field")) if "field" in law else None
        kw = _fields(f"{label}: [tap_latency]", law, PhysicalModel, skip=("field",))
        kw |= _fields(f"{label}: [latency]", data.get("latency", {}), PhysicalModel,
                      skip=_LAW_KEYS)
        if modes is not None:
            kw["field"] = modes
        latency = PhysicalModel(**kw)
    except ConfigError as exc:
        text = str(exc)
        raise ConfigError(text if text.startswith(label) else f"{label}: {text}") from None
    return CalibrationRef(head["name"], label), dwell, latency


def with_calibration(cfg: SimConfig, spec: str | Path) -> SimConfig:
    """``cfg`` under the calibration file ``spec`` (see :func:`load_calibration`)."""
    ref, dwell, latency = load_calibration(spec)
    return replace(cfg, dwell=dwell, latency=latency, service_calibration=ref)
