"""Does an issuer's e-purse money add up?  A pure check over four sources, to the fen.

Money enters an issuer's purses at personalisation (the opening balances) and at the bank
(loads captured into the issuer's float, ``issuer.epurse_load``), and leaves them at the
validators (purchases, each a record the back office keeps).  So, per issuer, over the chips
it issued::

    opening + loaded - cleared - pending = the chips' balances now

``cleared`` and ``pending`` are the purchases clearing accepted and those it has not decided
yet.  Refused purchases are not in it: each was made by no card (``tac-invalid``), is the
same debit counted once already (``duplicate``), or was paid by a chip whose money the
issuer never issued, a clone or a restored backup (``replayed-serial``, ``out-of-sequence``):
the fraud clearing is there to refuse.  Purchases still torn at a validator (debited, no
proof yet) are not records either: they show as a difference until the next tap settles
them, which is why a reconciliation runs once the day's records are in.  What an operator is
owed is what clearing paid it (:func:`operator_revenue`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class IssuerBooks:
    """One issuer's side of the identity, fen; ``difference`` is 0 when it adds up."""

    issuer_id: str
    opening: int
    loaded: int
    cleared: int
    pending: int
    refused: int  # for the record: not part of the identity (see the module's docstring)
    chips: int

    @property
    def expected_chips(self) -> int:
        return self.opening + self.loaded - self.cleared - self.pending

    @property
    def difference(self) -> int:
        return self.chips - self.expected_chips


def reconcile(issuer_id: str, *, opening: int, loaded: int, cleared: int, pending: int,
              refused: int, chips: int) -> IssuerBooks:
    """The identity for one issuer, all amounts in fen."""
    return IssuerBooks(issuer_id, opening, loaded, cleared, pending, refused, chips)


def operator_revenue(positions: Iterable[Mapping[str, object]]) -> dict[str, int]:
    """Per operator, what the day's clearing pays it (fen), from a report's positions."""
    paid: dict[str, int] = {}
    for p in positions:
        operator, amount = str(p["operator_id"]), p["amount_fen"]
        assert isinstance(amount, int)
        paid[operator] = paid.get(operator, 0) + amount
    return paid
