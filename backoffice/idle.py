"""Cards idle past the late-arrival floor leave memory, and come back when they tap again.

A card whose newest tap is older than the floor, with no open aggregate, no unpaid debt,
not denied, its row written and its ATC window saved in ``card_atcs`` (the save that
:func:`backoffice.horizon.advance_floor` makes in the same batch) holds nothing that the
database does not: :func:`evict_idle` drops it from ``BackOffice.cards``.  No tap older than
the floor is taken, so nothing but a new tap needs it again; the service
(:class:`~backoffice.service.TransactionCore`) reads the rows of the cards of a batch the
core does not hold (``Store.load_cards``) and hands them to :func:`adopt` before the batch.

If the batch that evicts a card fails to commit, the core is reloaded from the database,
where the floor has not moved: the card has taps from the floor on and is read back with
them (``Store.load(idle_cards=False)`` reads exactly the cards a core could hold).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from backoffice.records import ATC_SAVED, CardAtcRow, CardRow, TransitCard

if TYPE_CHECKING:
    from backoffice.engine import BackOffice


def evict_idle(office: BackOffice, first_day: int) -> int:
    """Drop every clean card whose newest tap is before UTC day ``first_day`` (the floor's);
    how many."""
    cards = office.cards
    idle = [
        token for token, c in cards.items()
        if c.last_day < first_day and c.open_agg is None and not c.debts and not c.denied
        and not c.dirty and c.atc_unsaved == ATC_SAVED and token not in office.deny
    ]  # fmt: skip
    for token in idle:
        del cards[token]
    return len(idle)


def adopt(office: BackOffice, rows: Iterable[tuple[CardRow, CardAtcRow | None]]) -> int:
    """Take back cards read from the database (a card the core holds is left as it is): its
    fare state stays encoded until its tap decodes it, its ATC window as saved."""
    cards = office.cards
    taken = 0
    for row, atcs in rows:
        if row.pan_token in cards:
            continue
        card = TransitCard(row.pan_token, row.masked_pan, denied=bool(row.denied))
        if row.fare_state:
            card.raw_state = row.fare_state
        if atcs is not None:
            card.atc_high, card.atc_bits = atcs.atc_high, int(atcs.atc_bits, 16)
        cards[row.pan_token] = card
        taken += 1
    return taken


__all__ = ["adopt", "evict_idle"]
