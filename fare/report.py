"""Charges as structured records: what ``tapsim fare price --format json|csv`` prints.

A record says what the table says, in fields a program can read without parsing English:

* ``kind`` -- ``fare`` (a leg's own product), ``transfer`` (a fare_transfer_rules row set the
  amount), ``cap`` (a cap took something off), ``unpriced`` (no fare leg rule matched: a gap in
  the fare table, charged 0 -- never to be confused with a fare of 0);
* ``event`` -- the engine's finer kind (``fare``, ``max_fare``, ``tap_off``, ``incomplete``,
  ``missing_tap_on``, ``unpriced``): what the tap was;
* ``product``, ``leg_rule``, ``transfer_rule``, ``caps`` -- the ids behind the amount.  GTFS
  rules have no ids of their own, so a rule is named ``file:line``;
* ``leg`` -- the tap's leg (route, network, boarding and alighting stop);
* ``journey`` -- ``card#n``, the card's n-th journey;
* ``amount`` in minor units with its ``currency``, and ``explanation``.

The JSON document carries ``schema_version`` (see fare/README.md); a field is only ever added
within a version.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import tzinfo
from typing import Final

from fare.explain import Charge, ChargeKind
from fare.transfers import Step

SCHEMA: Final = "tapsim.fare.price"
SCHEMA_VERSION: Final = 1
KINDS: Final = ("fare", "transfer", "cap", "unpriced")
CSV_COLUMNS: Final = ("tap_id", "card", "journey", "time", "kind", "event", "amount", "currency",
                      "product", "leg_rule", "leg_group", "transfer_rule", "caps", "route_id",
                      "network_id", "from_stop_id", "to_stop_id", "rider_category",
                      "fare_media", "explanation")


def charge_kind(c: Charge) -> str:
    """``fare``, ``transfer``, ``cap`` or ``unpriced`` (see module docstring)."""
    if c.kind is ChargeKind.UNPRICED:
        return "unpriced"
    if c.capped_by:
        return "cap"
    step = _own_step(c)
    if step is not None and step.transfer is not None:
        return "transfer"
    return "fare"


def _own_step(c: Charge) -> Step | None:
    """The step of the charge's own (last) leg, if it was priced in this charge."""
    if not c.steps or not c.legs:
        return None
    step = c.steps[-1]
    return step if step.leg.last == len(c.legs) - 1 else None


def record(c: Charge, tz: tzinfo) -> dict[str, object]:
    """One charge as a flat, JSON-ready dict (times in the feed's local time, ISO 8601)."""
    leg = c.legs[-1] if c.legs else None
    step = _own_step(c)
    price = step.leg.price if step is not None else (leg.price if leg is not None else None)
    transfer = step.transfer if step is not None else None
    return {
        "tap_id": c.tap_id,
        "card": c.card,
        "journey": f"{c.card}#{c.journey}",
        "time": c.time.astimezone(tz).isoformat(),
        "kind": charge_kind(c),
        "event": str(c.kind),
        "amount": c.amount,
        "currency": c.currency,
        "product": price.product.fare_product_id if price is not None else None,
        "leg_rule": f"fare_leg_rules.txt:{price.rule.line}" if price is not None else None,
        "leg_group": price.leg_group_id if price is not None else None,
        "transfer_rule": (f"fare_transfer_rules.txt:{transfer.line}"
                          if transfer is not None else None),
        "transfer_product": transfer.fare_product_id if transfer is not None else None,
        "caps": list(c.capped_by),
        "leg": None if leg is None else {
            "route_id": leg.route_id, "network_id": leg.network, "from_stop_id": leg.from_stop,
            "to_stop_id": leg.to_stop, "rider_category": leg.category,
            "fare_media": leg.media},
        "explanation": c.explain,
    }


def totals(charges: Iterable[Charge]) -> list[dict[str, object]]:
    """Per card and currency: the sum charged, sorted by card."""
    sums: dict[tuple[str, str], int] = {}
    for c in charges:
        key = (c.card, c.currency)
        sums[key] = sums.get(key, 0) + c.amount
    return [{"card": card, "amount": amount, "currency": cur}
            for (card, cur), amount in sorted(sums.items())]


def document(charges: Sequence[Charge], tz: tzinfo, feed_name: str) -> dict[str, object]:
    """The JSON document of ``tapsim fare price --format json``."""
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "feed": feed_name,
        "charges": [record(c, tz) for c in charges],
        "totals": totals(charges),
    }


def to_csv(charges: Iterable[Charge], tz: tzinfo) -> str:
    """One CSV row per charge, the columns of :data:`CSV_COLUMNS` (empty for none)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for c in charges:
        r = record(c, tz)
        leg = r["leg"] if isinstance(r["leg"], dict) else {}
        flat = {**r, **leg, "caps": " ".join(c.capped_by)}
        w.writerow(["" if flat.get(col) is None else flat[col] for col in CSV_COLUMNS])
    return out.getvalue()
