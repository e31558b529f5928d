"""The fare feed and taps as frozen values.

Everything the loader reads ends up here, already checked and converted: money as integer minor
units of the currency of its row (see ``Feed.network_currency``), times of day as seconds, dates
as ``datetime.date``.  The engine keeps its lookup index in a feed's one private slot
(``fare.engine.feed_index``); the values never change.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Literal
from zoneinfo import ZoneInfo

from fare.errors import TapError

TapAction = Literal["on", "off"]


@dataclass(frozen=True, slots=True)
class Stop:
    stop_id: str
    name: str
    parent_station: str | None = None
    location_type: int = 0
    timezone: str | None = None  # stops.stop_timezone (IANA key), when given


@dataclass(frozen=True, slots=True)
class Route:
    route_id: str
    name: str
    network_id: str | None = None


@dataclass(frozen=True, slots=True)
class Service:
    """A set of dates from calendar.txt and calendar_dates.txt."""

    service_id: str
    weekdays: tuple[bool, bool, bool, bool, bool, bool, bool] = (False,) * 7
    start: date | None = None
    end: date | None = None
    added: frozenset[date] = frozenset()
    removed: frozenset[date] = frozenset()

    def active(self, day: date) -> bool:
        """True when the service runs on ``day`` (calendar_dates exceptions win)."""
        if day in self.removed:
            return False
        if day in self.added:
            return True
        if self.start is None or self.end is None:
            return False
        return self.start <= day <= self.end and self.weekdays[day.weekday()]


@dataclass(frozen=True, slots=True)
class Timeframe:
    """Local time of day [start, end) in seconds, on the dates of ``service_id``."""

    timeframe_group_id: str
    start: int
    end: int
    service_id: str


@dataclass(frozen=True, slots=True)
class RiderCategory:
    rider_category_id: str
    name: str
    is_default: bool = False


@dataclass(frozen=True, slots=True)
class FareMedia:
    """fare_media_type: 0 none, 1 paper, 2 transit card (e.g. T-Union), 3 cEMV, 4 mobile app."""

    fare_media_id: str
    name: str
    media_type: int


@dataclass(frozen=True, slots=True)
class FareProduct:
    """One priced row of a fare product: for a rider category and fare media (None = any)."""

    fare_product_id: str
    name: str
    amount: int
    rider_category_id: str | None = None
    fare_media_id: str | None = None
    currency: str = ""  # ISO 4217, per row as fare_products.txt has it


@dataclass(frozen=True, slots=True)
class FareLegRule:
    """A row of fare_leg_rules.txt; ``line`` is where it was read, for explanations."""

    fare_product_id: str
    leg_group_id: str | None = None
    network_id: str | None = None
    from_area_id: str | None = None
    to_area_id: str | None = None
    from_timeframe_group_id: str | None = None
    to_timeframe_group_id: str | None = None
    rule_priority: int = 0
    line: int = 0


@dataclass(frozen=True, slots=True)
class FareLegJoinRule:
    from_network_id: str
    to_network_id: str
    from_stop_id: str | None = None
    to_stop_id: str | None = None
    line: int = 0


class TransferType(enum.IntEnum):
    """fare_transfer_type: how the transfer product combines with the leg products."""

    A_PLUS_AB = 0
    A_PLUS_AB_PLUS_B = 1
    AB = 2


class DurationType(enum.IntEnum):
    """duration_limit_type: which validations of the first and last leg bound the limit."""

    DEPARTURE_TO_ARRIVAL = 0
    DEPARTURE_TO_DEPARTURE = 1
    ARRIVAL_TO_DEPARTURE = 2
    ARRIVAL_TO_ARRIVAL = 3


@dataclass(frozen=True, slots=True)
class FareTransferRule:
    fare_transfer_type: TransferType
    from_leg_group_id: str | None = None
    to_leg_group_id: str | None = None
    transfer_count: int | None = None  # None: not given (different groups); -1: no limit
    duration_limit: int | None = None  # seconds
    duration_limit_type: DurationType | None = None
    fare_product_id: str | None = None  # None: the transfer itself costs nothing
    line: int = 0


class CapKind(enum.StrEnum):
    DAILY = "daily"
    WEEKLY = "weekly"
    ROLLING = "rolling"


@dataclass(frozen=True, slots=True)
class Cap:
    """A spending cap (tapsim extension, fare_caps.txt) for a rider category and fare media."""

    cap_id: str
    kind: CapKind
    amount: int
    rider_category_id: str | None = None
    fare_media_id: str | None = None
    start_time: int = 0  # service-day cut-over, seconds after local midnight
    start_day: int = 0  # weekly: first day of the week, 0 = Monday
    days: int = 1  # rolling: window length in days
    line: int = 0
    currency: str = ""  # counts and limits only charges in this currency


@dataclass(frozen=True, slots=True)
class SpendTier:
    """From ``threshold`` spent in a calendar month on, later journeys get ``discount_bp`` off."""

    cap_id: str
    threshold: int
    discount_bp: int  # basis points: 2000 = 20 %
    rider_category_id: str | None = None
    fare_media_id: str | None = None
    line: int = 0
    currency: str = ""  # counts and discounts only journeys in this currency


@dataclass(frozen=True, slots=True)
class MaxFare:
    """Charged for a leg whose tap-off never came (or a tap-off with no tap-on)."""

    cap_id: str
    amount: int
    network_id: str | None = None
    rider_category_id: str | None = None
    fare_media_id: str | None = None
    tap_off_window: int = 3 * 3600  # seconds after tap-on a tap-off still closes the leg
    line: int = 0
    currency: str = ""  # applies only to networks priced in this currency


@dataclass(frozen=True, slots=True)
class Feed:
    """A loaded, checked GTFS-Fares v2 feed (plus the tapsim caps extension)."""

    timezone: ZoneInfo
    currency: str  # the first product's currency: the only one unless ``currencies`` has more
    stops: dict[str, Stop]
    routes: dict[str, Route]
    networks: frozenset[str]
    areas: frozenset[str]
    stop_areas: dict[str, frozenset[str]]  # stop_id -> areas, parent stations already applied
    services: dict[str, Service]
    timeframes: tuple[Timeframe, ...]
    rider_categories: dict[str, RiderCategory]
    fare_media: dict[str, FareMedia]
    fare_products: dict[str, tuple[FareProduct, ...]]
    leg_rules: tuple[FareLegRule, ...]
    leg_rules_have_priority: bool
    join_rules: tuple[FareLegJoinRule, ...]
    transfer_rules: tuple[FareTransferRule, ...]
    caps: tuple[Cap, ...] = ()
    spend_tiers: tuple[SpendTier, ...] = ()
    max_fares: tuple[MaxFare, ...] = ()
    name: str = ""
    # Every currency of fare_products.txt, in order of first use (``currency`` first).
    currencies: tuple[str, ...] = ()
    # The currency of each network's legs (None: routes with no network), for a network some
    # leg rule prices: every product its rules can charge is in it (checked at load).  A leg is
    # charged, capped and totalled in its network's currency; a journey in its first leg's.
    network_currency: dict[str | None, str] = field(default_factory=dict)
    # Where fare.engine.feed_index keeps the feed's pricing index (opaque here: the model
    # knows nothing of the engine; see fare.engine.feed_index).
    _index: object = field(default=None, init=False, repr=False, compare=False)

    @property
    def default_rider_category(self) -> str | None:
        """The category riders with no concession belong to (is_default_fare_category = 1)."""
        for cat in self.rider_categories.values():
            if cat.is_default:
                return cat.rider_category_id
        return None


@dataclass(frozen=True, slots=True)
class Tap:
    """One validation of a card: ``on`` when boarding, ``off`` when alighting."""

    tap_id: str
    card: str
    time: datetime
    stop_id: str
    route_id: str
    action: TapAction
    rider_category: str | None = None
    fare_media: str | None = None

    def __post_init__(self) -> None:
        if self.time.tzinfo is None or self.time.utcoffset() is None:
            raise TapError(f"tap {self.tap_id}: time {self.time.isoformat()} has no UTC offset")
        if self.action not in ("on", "off"):
            raise TapError(f"tap {self.tap_id}: action must be 'on' or 'off', not {self.action!r}")
