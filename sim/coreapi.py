"""What the fleet model needs from the transaction core, and what it hears back.

The model talks to the core through :class:`SimCore` only; :mod:`sim.core` implements it
over the real ``backoffice``/``issuer``/``fare`` code.  Keeping the seam this narrow keeps
the bus model free of the core's types and makes it obvious what the simulation asks of it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol


@dataclass(frozen=True, slots=True)
class SimCard:
    """A rider's card as its bank issues it (the PAN is test data, made by the simulation)."""

    index: int
    pan: str
    psn: str
    token: str
    masked: str
    scheme: str  # "tdes" or "sm4"
    kind: str  # sim.population.KINDS
    state: str  # sim.population.STATES
    category: str
    expiry: dt.date
    issuer_master_key: bytes
    purse_issuer: str = "0000"  # the T-Union issuer (city) of the card's e-purse


class SimTap(NamedTuple):
    """One accepted card tap, as the validator sends it (a named tuple: one is made for
    every tap, and a tuple is made at a fraction of a frozen dataclass's cost)."""

    tap_id: str
    validator_id: str
    card: SimCard
    time: dt.datetime
    stop_id: str
    route_id: str
    action: str  # "tap", "tap_on", "tap_off"
    atc: int
    arqc: bytes
    ac_data: bytes
    fare_media: str


@dataclass
class CoreReply:
    """What one call to the core changed that the fleet must know or count."""

    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    deny_add: list[tuple[str, str]] = field(default_factory=list)  # (token, code)
    deny_remove: list[str] = field(default_factory=list)
    events: list[tuple[str, str]] = field(default_factory=list)  # (kind, code)
    alerts: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class EpurseQuote:
    card: int
    fare: int  # fen; negative: a refund the operator owes the purse (tap-off of a max fare)
    state: object  # the card's fare state after this tap (opaque)


class SimCore(Protocol):
    def issue(self, card: SimCard, now: dt.datetime) -> bytes:
        """Open the card's account and issue the card in the state the population gave it;
        the card's cryptogram key, as personalisation loads it into the chip."""
        ...

    def ingest(self, taps: Sequence[SimTap], now: dt.datetime) -> CoreReply:
        """Price and authorize a batch of taps as the back office receives it."""
        ...

    def needs_cryptogram(self, token: str) -> bool:
        """Whether the core would send this card's next tap's cryptogram to the issuer."""
        ...

    def epurse_quote(self, tap: SimTap) -> EpurseQuote:
        """What a T-Union e-purse pays for this tap (priced from the trips the card
        records), without remembering it yet."""
        ...

    def epurse_commit(self, quote: EpurseQuote) -> None:
        """The purse paid: the card now records this trip."""
        ...

    def close_day(self, now: dt.datetime) -> CoreReply:
        """Charge every aggregate whose service day (or travel time) is over."""
        ...

    def recover(self, now: dt.datetime) -> CoreReply:
        """Scheduled debt recovery."""
        ...

    def top_up(self, card: SimCard, amount: int, now: dt.datetime) -> None:
        """The holder pays money into the card's account at a branch."""
        ...

    def money(self) -> dict[str, int]:
        """Ledger figures (fen): fares, charged, receivable, first-ride loss, recovered."""
        ...
