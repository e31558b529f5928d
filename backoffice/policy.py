"""The operator's rules for deferred authorization and debt recovery, checked on creation."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo

MAX_TRAVEL_TIME = timedelta(days=14)  # UnionPay ODA / Visa-Mastercard MTT ceiling
MAX_RETRIES = 6  # scheduled resubmissions of one debt ...
RETRY_WINDOW = timedelta(days=14)  # ... within this window (Visa)
DENY_REMOVAL_DEADLINE = timedelta(hours=1)  # off the deny list after a successful recovery
LATE_HORIZON = timedelta(days=7)  # taps older than this (behind the newest seen) are too late
ATC_WINDOW = 64  # ATCs remembered per card below its highest (the issuer's default window)


class PolicyError(ValueError):
    """A policy value outside what the scheme rules allow (message names the field)."""


@dataclass(frozen=True, slots=True)
class ServiceDay:
    """A service day runs from ``cutover`` to the next day's ``cutover`` in ``tz``."""

    tz: tzinfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))
    cutover: time = time(4, 0)
    _labels: dict[tuple[object, ...], str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.cutover.tzinfo is not None:
            raise PolicyError("ServiceDay.cutover is a wall-clock time without tzinfo")

    def day_of(self, t: datetime) -> date:
        """The service day a moment belongs to (before the cut-over: the previous day)."""
        if t.tzinfo is None:
            raise PolicyError("ServiceDay.day_of needs a timezone-aware time")
        local = t.astimezone(self.tz)
        day = local.date()
        if local.time() < self.cutover:
            day -= timedelta(days=1)
        return day

    def label(self, t: datetime) -> str:
        """``day_of(t)`` as ISO text, memoised per local hour of ``t`` (ingest's hot path).

        An hour is cached only when its first and last instant fall on the same service day,
        so odd offsets and DST folds fall back to the exact computation.
        """
        key = (t.date(), t.hour, t.fold, t.tzinfo)
        label = self._labels.get(key)
        if label is None:
            label = self.day_of(t).isoformat()
            start = t.replace(minute=0, second=0, microsecond=0)
            last = start.replace(minute=59, second=59, microsecond=999_999)
            if self.day_of(start) == self.day_of(last):
                self._labels[key] = label
        return label

    def end_of(self, day: date) -> datetime:
        """The first moment after ``day`` (the next cut-over), timezone-aware."""
        return datetime.combine(day + timedelta(days=1), self.cutover, tzinfo=self.tz)


@dataclass(frozen=True, slots=True)
class AggregationPolicy:
    """When an aggregate of fares closes and is charged as one transaction."""

    spend_limit: int = 5000  # fen
    max_travel_time: timedelta = timedelta(days=1)
    close_at_day_end: bool = True
    nominal_amount: int = 0  # 0: account verification; >0: a small hold at first use
    service_day: ServiceDay = field(default_factory=ServiceDay)

    def __post_init__(self) -> None:
        if self.spend_limit <= 0:
            raise PolicyError(f"AggregationPolicy.spend_limit must be positive: {self.spend_limit}")
        if not timedelta(0) < self.max_travel_time <= MAX_TRAVEL_TIME:
            raise PolicyError(
                "AggregationPolicy.max_travel_time must be within (0, 14 days], "
                f"got {self.max_travel_time}"
            )
        if self.nominal_amount < 0:
            raise PolicyError("AggregationPolicy.nominal_amount must not be negative")


@dataclass(frozen=True, slots=True)
class RecoveryPolicy:
    """Scheduled debt recovery: offsets of each retry from the first decline."""

    retry_after: tuple[timedelta, ...] = (
        timedelta(days=1),
        timedelta(days=2),
        timedelta(days=4),
        timedelta(days=7),
        timedelta(days=10),
        timedelta(days=13),
    )

    def __post_init__(self) -> None:
        if not 1 <= len(self.retry_after) <= MAX_RETRIES:
            raise PolicyError(
                f"RecoveryPolicy: 1..{MAX_RETRIES} retries, got {len(self.retry_after)}"
            )
        if list(self.retry_after) != sorted(self.retry_after) or self.retry_after[0] <= timedelta(
            0
        ):
            raise PolicyError("RecoveryPolicy.retry_after must be positive and increasing")
        if self.retry_after[-1] > RETRY_WINDOW:
            raise PolicyError("RecoveryPolicy: every retry must fall within 14 days")


@dataclass(frozen=True, slots=True)
class BackOfficeConfig:
    """Who the back office is towards the issuer, and its rules."""

    merchant_id: str = "tapsim-transit"
    currency: str = "CNY"
    aggregation: AggregationPolicy = field(default_factory=AggregationPolicy)
    recovery: RecoveryPolicy = field(default_factory=RecoveryPolicy)
    # Tap ids are deduplicated in memory for this long behind the newest tap time seen (each
    # capped at the time it arrived); an older tap is refused as too late and kept in rejects.
    late_horizon: timedelta = LATE_HORIZON
    # Per card: the highest ATC seen and which of the ``atc_window`` below it were seen; an
    # ATC seen, or below the window, is refused (replayed, cloned or too old) with an alert.
    atc_window: int = ATC_WINDOW

    def __post_init__(self) -> None:
        if not timedelta(days=1) <= self.late_horizon <= timedelta(days=366):
            raise PolicyError(
                f"BackOfficeConfig.late_horizon must be 1 to 366 days, got {self.late_horizon}"
            )
        if not 1 <= self.atc_window <= 4096:
            raise PolicyError(
                f"BackOfficeConfig.atc_window must be 1..4096, got {self.atc_window}"
            )
        if not self.merchant_id:
            raise PolicyError("BackOfficeConfig.merchant_id must not be empty")
        if len(self.currency) != 3 or not self.currency.isupper():
            raise PolicyError(f"BackOfficeConfig.currency must be ISO 4217, got {self.currency!r}")
