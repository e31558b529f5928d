"""The core's restart path: a :class:`~backoffice.engine.BackOffice` rebuilt from a
:class:`~backoffice.records.Snapshot` of its database.

Only open state is read back (cards, ATC windows, the tap ids of the late-arrival horizon,
open aggregates and their taps, unpaid debts, the deny list, the running totals); a card's
stored fare state stays encoded until it is needed (:func:`decode`: when the card next taps,
or now when it has open state).  Besides engine.py, only this module and
:mod:`backoffice.horizon` set the horizon's attributes of the core.
"""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING

from backoffice.horizon import DAY_US, NO_FLOOR
from backoffice.records import (
    Aggregate,
    Snapshot,
    TransitCard,
    aggregate_from_row,
    debt_from_row,
    priced_tap,
    remember_atc,
)

if TYPE_CHECKING:
    from backoffice.engine import BackOffice


def restore(office: BackOffice, snap: Snapshot) -> None:
    """Open state only: cards (their fare state decoded when they next tap, unless open
    state needs it now), ATC windows, tap ids of the horizon, open aggregates and their
    taps, unpaid debts, the deny list and the running totals (the cyclic collector
    paused: what is built here is acyclic, and millions of objects)."""
    was = gc.isenabled()
    gc.disable()
    try:
        _restore_open(office, snap)
    finally:
        if was:
            gc.enable()


def _restore_open(office: BackOffice, snap: Snapshot) -> None:
    dec = office.pricer.decode_state
    cards = office.cards
    for row in snap.cards:
        card = TransitCard(row.pan_token, row.masked_pan, denied=bool(row.denied))
        if row.fare_state:
            card.raw_state = row.fare_state
        cards[row.pan_token] = card
    # One stored state decoded now: a database of another fare feed is refused at start
    # (the CLI says so), not tap by tap.
    sample = next((c for c in cards.values() if c.raw_state is not None), None)
    if sample is not None:
        decode(office, sample)
    elif snap.state_sample is not None:  # idle cards left in the database (backoffice.idle)
        office.pricer.decode_state(bytes.fromhex(snap.state_sample))
    for token, high, bits in snap.card_atcs:
        saved = cards.get(token)
        if saved is not None:
            saved.atc_high, saved.atc_bits = high, int(bits, 16)
    if snap.floor_us is not None:
        office._floor_us = snap.floor_us
    window = office._atc_window
    ids, by_day = office.tap_ids, office._ids_by_day
    high = NO_FLOOR
    day_ids: list[str] = []
    last_day = NO_FLOOR
    for tap_id, token, atc, time_us, received_us in snap.recent_taps:  # in time order
        ids.add(tap_id)
        bucket = time_us // DAY_US
        if bucket != last_day:
            day_ids = by_day.setdefault(bucket, [])
            last_day = bucket
        day_ids.append(tap_id)
        seen = time_us if time_us < received_us else received_us
        if seen > high:  # noqa: PLR1730 - a loop over every tap of the horizon
            high = seen
        tapped = cards.get(token)
        if tapped is not None:
            remember_atc(tapped, atc, window)
            if bucket < tapped.atc_unsaved:  # noqa: PLR1730 - saved as it ages out
                tapped.atc_unsaved = bucket
            if bucket > tapped.last_day:  # noqa: PLR1730 - a loop over every tap
                tapped.last_day = bucket
    office._high_us = high
    office.reject_ids = set(snap.reject_ids)
    aggs: dict[str, Aggregate] = {}
    for arow in snap.open_aggregates:
        agg = aggregate_from_row(arow, dec(bytes.fromhex(arow.fare_state_at_open)))
        aggs[agg.aggregate_id] = agg
        card = cards[agg.pan_token]
        decode(office, card)
        card.open_agg = agg
        office._open[agg.pan_token] = agg
    for trow in sorted(snap.open_taps, key=lambda r: (r.time_us, r.tap_id)):
        p = priced_tap(trow)
        aggs[p.aggregate_id].taps.append(p)
    for agg in aggs.values():  # the running figures live in the taps rows
        agg.total = sum(p.amount for p in agg.taps)
        agg.tap_count = len(agg.taps)
        if agg.taps:
            agg.first_us = min(agg.first_us, agg.taps[0].time_us)
            last = agg.taps[-1]
            agg.last_us, agg.last_tap_id = max(
                (agg.last_us, agg.last_tap_id), (last.time_us, last.tap.tap_id)
            )
    for drow in snap.unpaid_debts:
        debt = debt_from_row(drow)
        card = cards[debt.pan_token]
        decode(office, card)
        card.debts[debt.debt_id] = debt
        office._debtors.add(debt.pan_token)
    office.deny = {r.pan_token: r for r in snap.deny}
    office.balances.update(snap.balances)
    office.fares_total = snap.fares_total
    office._totals_written = office.totals_json()


def decode(office: BackOffice, card: TransitCard) -> None:
    """Decode the card's stored fare state now (it has open state, or taps)."""
    if card.raw_state is not None:
        card.fare_state = office.pricer.decode_state(bytes.fromhex(card.raw_state))
        card.raw_state = None


__all__ = ["decode", "restore"]
