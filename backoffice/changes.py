"""The rows the service commits: everything the core decided since the last drain.

The core keeps what a batch changes in buffers on the
:class:`~backoffice.engine.BackOffice` (``_new_taps``, ``_updated_taps``, ``_rejects``,
``_entries``, ``_dirty_aggs``, ``_dirty_debts``, ``_dirty_cards``, ``_atc_rows``,
``_deny_set``, ``_deny_clear``, ``_deny_events``, ``_alerts``; their types are declared on
the class): the per-tap path appends to them inline.  :func:`drain_changes` turns them
into the :class:`~backoffice.records.Changes` the service writes in one transaction per
batch, with the running totals when they moved, and empties them
(:func:`clear_changes`).  Module functions over the core (``office``), as
:mod:`backoffice.horizon`; compiled with it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Final

from backoffice.horizon import saved_floor
from backoffice.ledger import RECEIVABLE, REVENUE, Entry
from backoffice.records import CardRow, Changes, aggregate_row, debt_row, tap_row, to_us

if TYPE_CHECKING:
    from backoffice.engine import BackOffice

TOTALS_KEY: Final = "core.totals"  # meta: running ledger balances, fares total, floor


def drain_changes(office: BackOffice) -> Changes:
    """Rows for everything decided since the last drain (then forgets them)."""
    enc = office.pricer.encode_state
    new_ids = {p.tap.tap_id for p in office._new_taps} if office._updated_taps else set()
    ch = Changes(
        taps=[tap_row(p) for p in office._new_taps],
        tap_updates=[
            (p.amount, p.explain, tid)
            for tid, p in office._updated_taps.items()
            if tid not in new_ids
        ],
        rejects=office._rejects,
        entries=fare_entries(office) + office._entries,
        aggregates=[
            aggregate_row(a, enc(a.fare_state_at_open)) for a in office._dirty_aggs.values()
        ],
        debts=[debt_row(d) for d in office._dirty_debts.values()],
        cards=[
            CardRow(
                c.pan_token,
                c.masked_pan,
                enc(c.fare_state).hex(),
                c.open_agg.aggregate_id if c.open_agg else None,
                int(c.denied),
            )
            for c in office._dirty_cards.values()
        ],
        card_atcs=office._atc_rows,
        deny_set=office._deny_set,
        deny_clear=office._deny_clear,
        deny_events=office._deny_events,
        alerts=office._alerts,
    )
    totals = totals_json(office)
    if totals != office._totals_written:
        ch.meta[TOTALS_KEY] = office._totals_written = totals
    clear_changes(office)
    return ch


def fare_entries(office: BackOffice) -> list[Entry]:
    """The ledger entries of the fares of the taps accepted since the last drain, made
    here rather than per tap (a refund posts the other way)."""
    out: list[Entry] = []
    for p in office._new_taps:
        if p.posted:
            t = p.tap
            amount, debit, credit = p.posted, RECEIVABLE, REVENUE
            if amount < 0:  # a refund
                amount, debit, credit = -amount, REVENUE, RECEIVABLE
            out.append(
                Entry(
                    "fare:" + t.tap_id, debit, credit, t.operator_id, p.service_day, amount,
                    to_us(t.time),
                )
            )  # fmt: skip
    return out


def totals_json(office: BackOffice) -> str:
    """The running figures a restart reads instead of summing the whole ledger: ledger
    balances, fares total and the late-arrival floor (written with every batch that
    moves them, in its transaction)."""
    return json.dumps(
        {"balances": dict(sorted(office.balances.items())), "fares_total": office.fares_total,
         "floor_us": saved_floor(office._floor_us)},
        separators=(",", ":"),
    )  # fmt: skip


def clear_changes(office: BackOffice) -> None:
    """Empty the change buffers (new lists: the drained ones now belong to the rows)."""
    for card in office._dirty_cards.values():
        card.dirty = False
    office._new_taps = []
    office._updated_taps = {}
    office._rejects = []
    office._entries = []
    office._dirty_aggs = {}
    office._dirty_debts = {}
    office._dirty_cards = {}
    office._atc_rows = []
    office._deny_set = []
    office._deny_clear = []
    office._deny_events = []
    office._alerts = []


__all__ = ["TOTALS_KEY", "clear_changes", "drain_changes", "fare_entries", "totals_json"]
