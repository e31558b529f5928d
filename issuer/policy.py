"""Per-bank rules: what differs from one bank to the next in the source documents."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum


class ExpiryPolicy(StrEnum):
    """After the expiry date some banks keep the financial function, some stop it."""

    KEEP = "keep"
    STOP = "stop"


@dataclass(frozen=True, slots=True)
class BankPolicy:
    """One bank's choices.  Defaults are plausible, not normative."""

    bank_id: str
    expiry: ExpiryPolicy = ExpiryPolicy.STOP
    dormancy_after: timedelta = timedelta(days=365 * 3)
    replacement_grace: timedelta = timedelta(days=30)
    renewal_window: timedelta = timedelta(days=60)
    atc_window: int = 64  # how many recent ATCs above the floor are remembered

    def __post_init__(self) -> None:
        if not self.bank_id:
            raise ValueError("BankPolicy.bank_id must not be empty")
        for name in ("dormancy_after", "replacement_grace", "renewal_window"):
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"BankPolicy.{name} must be positive")
        if not 1 <= self.atc_window <= 4096:
            raise ValueError(f"BankPolicy.atc_window must be 1..4096, got {self.atc_window}")
