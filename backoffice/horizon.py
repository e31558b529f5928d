"""The late-arrival horizon: which taps the core still takes, and which ids it may forget.

A tap older than the floor is refused as too late; a tap from the floor on is checked
against the ids of every tap taken from the floor on (the same id again is a duplicate).
The floor trails the newest tap time seen (each capped at its arrival, so a validator clock
ahead of time cannot push it) by ``late_horizon``, rounded down to the start of a UTC day:
the ids of a whole day are forgotten together.

The bookkeeping lives on :class:`~backoffice.engine.BackOffice` as plain attributes,
``tap_ids``, ``reject_ids``, ``_floor_us``, ``_high_us``, ``_horizon_us``, ``_ids_by_day``
and ``_rejects_by_day``: the per-tap path (``BackOffice._accept``) reads and extends them
inline, where an object in between would cost an attribute read a tap.  Besides
engine.py, only this module (which moves the floor) and :mod:`backoffice.restore` (which
rebuilds them at start) touch them.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Final

from backoffice.idle import evict_idle
from backoffice.records import ATC_SAVED, CardAtcRow, from_us

if TYPE_CHECKING:
    from backoffice.engine import BackOffice

DAY_US: Final = 86_400 * 1_000_000  # tap ids are kept and dropped by UTC day of tap time
NO_FLOOR: Final = -(1 << 62)  # no tap refused as too late yet


def floor_time(floor_us: int) -> datetime | None:
    """The oldest tap time still taken (older taps are refused as too late), or None."""
    return None if floor_us == NO_FLOOR else from_us(floor_us)


def saved_floor(floor_us: int) -> int | None:
    """The floor as the running totals keep it (None: no floor yet), read back at restart."""
    return None if floor_us == NO_FLOOR else floor_us


def advance_floor(office: BackOffice) -> None:
    """Move the late-arrival floor to the start of the UTC day ``late_horizon`` behind the
    newest tap: forget the tap and reject ids of the days before it, and save the ATC
    window of every card with a tap before it not saved yet (those taps age out of
    memory, and a restart reads only taps from the floor on): each active card about
    once per horizon, spread over the days.  The issuer, when it keeps records in this
    process (``prune``, :class:`backoffice.ports.PrunableGateway`), forgets those a restart
    would not load for the new floor (issuer/retention.py); a bank over the wire has none."""
    floor = (office._high_us - office._horizon_us) // DAY_US * DAY_US
    if floor <= office._floor_us:
        return
    office._floor_us = floor
    prune = getattr(office.issuer, "prune", None)
    if prune is not None:
        prune(from_us(floor))
    first = floor // DAY_US
    ids = office.tap_ids
    for day in [d for d in office._ids_by_day if d < first]:
        for tap_id in office._ids_by_day.pop(day):
            ids.discard(tap_id)
    for day in [d for d in office._rejects_by_day if d < first]:
        for reject_id in office._rejects_by_day.pop(day):
            office.reject_ids.discard(reject_id)
    for card in office.cards.values():
        if card.atc_unsaved < first:
            card.atc_unsaved = ATC_SAVED
            office._atc_rows.append(
                CardAtcRow(card.pan_token, card.atc_high, format(card.atc_bits, "x"))
            )
    if office.evict_idle:
        evict_idle(office, first)


__all__ = ["DAY_US", "NO_FLOOR", "advance_floor", "floor_time", "saved_floor"]
