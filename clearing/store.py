"""The thin adapter between the back office's store and the clearing core.

``run_day`` reads a day's kept e-purse taps, decides the ones not decided before (with the
cleared history of the same cards), keeps the decisions (one per tap id: a re-run adds
none, so nothing is settled twice) and reports the day from every kept decision.
``issuer_positions`` is what reconciliation needs per issuer: purchases cleared, pending
(kept, not yet cleared) and refused, in fen.
"""

from __future__ import annotations

import datetime as dt
import gc
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

from backoffice.records import ClearingItemRow, EpurseTapRow
from backoffice.storage.sql import SqlStore
from clearing.core import PurseRecord, clear_day
from clearing.report import DayReport, Item, build
from clearing.tac import TacVerifier
from emv.epurse.issuers import IssuerRegistry


def purse_record(row: EpurseTapRow) -> PurseRecord:
    return PurseRecord(
        tap_id=row.tap_id, issuer_id=row.issuer_id, card_number=row.card_number,
        card_serial=row.card_serial, amount=row.amount, tac=row.tac, psam_id=row.psam_id,
        psam_serial=row.psam_serial, key_version=row.key_version,
        algorithm_id=row.algorithm_id, tac_time=row.tac_time, time_us=row.time_us,
        operator_id=row.operator_id, day=row.day)


def _item(row: ClearingItemRow) -> Item:
    return Item(row.tap_id, row.issuer_id, row.operator_id, row.card_serial, row.amount,
                row.reason)


def run_day(store: SqlStore, day: str, issuers: IssuerRegistry, now: dt.datetime,
            home: Mapping[str, str] | None = None, *, freeze: bool = False) -> DayReport:
    """Clear ``day`` (YYYY-MM-DD): idempotent, a re-run reports the same and settles nothing.

    ``freeze``: once the day is loaded, move it out of the garbage collector's sight
    (``gc.freeze``; a one-shot process such as ``tapsim clearing run`` may): collections then
    walk what the decisions allocate, not the whole day again (benchmarks/test_bench_clearing)."""
    decided = {i.tap_id for i in store.clearing_items(day)}
    fresh = [purse_record(r) for r in store.epurse_taps(day) if r.tap_id not in decided]
    history = [purse_record(r) for r in store.epurse_cleared_of_cards({r.card for r in fresh})]
    if freeze:
        gc.freeze()
    decisions = clear_day(fresh, history, issuers, TacVerifier(issuers))
    run_id = secrets.token_hex(6)
    at_us = int(now.timestamp() * 1_000_000)
    added = store.add_clearing([
        ClearingItemRow(tap_id=d.record.tap_id, day=day, issuer_id=d.record.issuer_id or "",
                        operator_id=d.record.operator_id, card_serial=d.record.card_serial,
                        amount=d.record.amount, status="cleared" if d.cleared else "refused",
                        reason=d.reason.value if d.reason else "", run_id=run_id,
                        cleared_us=at_us)
        for d in decisions])
    return build(day, [_item(i) for i in store.clearing_items(day)], added, home)


def day_report(store: SqlStore, day: str, home: Mapping[str, str] | None = None) -> DayReport:
    """The report of a day from its kept decisions (nothing decided)."""
    return build(day, [_item(i) for i in store.clearing_items(day)], 0, home)


@dataclass(frozen=True)
class IssuerPosition:
    """An issuer's e-purse purchases kept by the back office, fen: what
    :func:`clearing.reconcile.reconcile` takes, with the bank's loads and the chips."""

    issuer_id: str
    cleared: int
    pending: int  # kept, not yet decided by a clearing run
    refused: int
    refused_by_reason: dict[str, int] = field(default_factory=dict)


def issuer_positions(store: SqlStore) -> dict[str, IssuerPosition]:
    """Per issuer id: cleared, pending (kept, not yet decided) and refused purchases, fen."""
    sums: dict[str, list[int]] = {}
    reasons: dict[str, dict[str, int]] = {}
    decided: dict[str, ClearingItemRow] = {i.tap_id: i for i in store.clearing_items()}
    for row in store.epurse_taps():
        issuer = row.issuer_id or ""
        cell = sums.setdefault(issuer, [0, 0, 0])
        item = decided.get(row.tap_id)
        if item is None:
            cell[1] += row.amount
        elif item.status == "cleared":
            cell[0] += row.amount
        else:
            cell[2] += row.amount
            by = reasons.setdefault(issuer, {})
            by[item.reason] = by.get(item.reason, 0) + row.amount
    return {k: IssuerPosition(k, cleared=v[0], pending=v[1], refused=v[2],
                              refused_by_reason=reasons.get(k, {}))
            for k, v in sorted(sums.items())}
