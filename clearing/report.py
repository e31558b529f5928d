"""The settlement report of a clearing day: per issuer batch, per issuer and operator, each
party's net, the refused records with their reason; as a table, JSON or CSV.

Built from the decisions kept for the day (all of them, whichever run made them), so the
report of a day is the same however often it is cleared.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from clearing.core import Decision, PurseRecord, Reason, settle


@dataclass(frozen=True)
class Item:
    """One kept decision: what a report needs of it."""

    tap_id: str
    issuer_id: str
    operator_id: str
    card_serial: int
    amount: int
    reason: str  # "" when cleared


@dataclass(frozen=True)
class DayReport:
    day: str
    batches: list[dict[str, Any]]  # per issuer: cleared count and amount, refused count
    positions: list[dict[str, Any]]  # issuer -> operator
    nets: list[dict[str, Any]]
    city_nets: list[dict[str, Any]]
    refused: list[dict[str, Any]]
    new_decisions: int  # decided by this run (0 on a re-run)

    def to_dict(self) -> dict[str, Any]:
        return {"day": self.day, "batches": self.batches, "positions": self.positions,
                "nets": self.nets, "city_nets": self.city_nets, "refused": self.refused,
                "new_decisions": self.new_decisions}


def build(day: str, items: Iterable[Item], new_decisions: int = 0,
          home: Mapping[str, str] | None = None) -> DayReport:
    items = sorted(items, key=lambda i: i.tap_id)
    decisions = [Decision(PurseRecord(i.tap_id, i.issuer_id, None, i.card_serial, i.amount, "",
                                      "", 0, None, None, None, 0, i.operator_id, day),
                          Reason(i.reason) if i.reason else None) for i in items]
    s = settle(decisions, home)
    batches: dict[str, dict[str, Any]] = {}
    for i in items:
        b = batches.setdefault(i.issuer_id, {"issuer_id": i.issuer_id, "cleared": 0,
                                             "amount_fen": 0, "refused": 0})
        if i.reason:
            b["refused"] += 1
        else:
            b["cleared"] += 1
            b["amount_fen"] += i.amount
    return DayReport(
        day=day, batches=[batches[k] for k in sorted(batches)],
        positions=[{"issuer_id": p.issuer_id, "operator_id": p.operator_id, "count": p.count,
                    "amount_fen": p.amount} for p in s.positions],
        nets=[{"party": n.party, "receives_fen": n.receives, "pays_fen": n.pays,
               "net_fen": n.net} for n in s.nets],
        city_nets=[{"payer": a, "payee": b, "amount_fen": x} for a, b, x in s.city_nets],
        refused=[{"tap_id": i.tap_id, "issuer_id": i.issuer_id, "operator_id": i.operator_id,
                  "card_serial": i.card_serial, "amount_fen": i.amount, "reason": i.reason}
                 for i in items if i.reason],
        new_decisions=new_decisions)


def _yuan(fen: int) -> str:
    sign = "-" if fen < 0 else ""
    return f"{sign}{abs(fen) // 100}.{abs(fen) % 100:02d}"


def as_table(r: DayReport) -> str:
    lines = [f"e-purse clearing, day {r.day} ({r.new_decisions} records decided by this run)",
             "", "batches per card issuer:"]
    lines += [f"  issuer {b['issuer_id']}: {b['cleared']} cleared, {_yuan(b['amount_fen'])} CNY;"
              f" {b['refused']} refused" for b in r.batches] or ["  (none)"]
    lines += ["", "issuer owes operator:"]
    lines += [f"  {p['issuer_id']} -> {p['operator_id']}: {p['count']} purchases, "
              f"{_yuan(p['amount_fen'])} CNY" for p in r.positions] or ["  (none)"]
    lines += ["", "net per party (+ receives, - pays):"]
    lines += [f"  {n['party']}: {_yuan(n['net_fen'])} CNY" for n in r.nets] or ["  (none)"]
    if r.city_nets:
        lines += ["", "between cities (netted):"]
        lines += [f"  issuer {c['payer']} pays city {c['payee']}: {_yuan(c['amount_fen'])} CNY"
                  for c in r.city_nets]
    lines += ["", "refused:"]
    lines += [f"  {x['tap_id']}: {x['reason']} (issuer {x['issuer_id']}, operator "
              f"{x['operator_id']}, {_yuan(x['amount_fen'])} CNY)"
              for x in r.refused] or ["  (none)"]
    return "\n".join(lines) + "\n"


def as_json(r: DayReport) -> str:
    return json.dumps(r.to_dict(), indent=1, sort_keys=True) + "\n"


CSV_FIELDS = ("section", "day", "issuer_id", "operator_id", "party", "count", "amount_fen",
              "tap_id", "reason")


def as_csv(r: DayReport) -> str:
    """One flat table: a ``section`` column says which part of the report a row is."""
    out = io.StringIO()
    w = csv.DictWriter(out, CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for b in r.batches:
        w.writerow({"section": "batch", "day": r.day, "issuer_id": b["issuer_id"],
                    "count": b["cleared"], "amount_fen": b["amount_fen"]})
    for p in r.positions:
        w.writerow({"section": "position", "day": r.day, "issuer_id": p["issuer_id"],
                    "operator_id": p["operator_id"], "count": p["count"],
                    "amount_fen": p["amount_fen"]})
    for n in r.nets:
        w.writerow({"section": "net", "day": r.day, "party": n["party"],
                    "amount_fen": n["net_fen"]})
    for x in r.refused:
        w.writerow({"section": "refused", "day": r.day, "issuer_id": x["issuer_id"],
                    "operator_id": x["operator_id"], "amount_fen": x["amount_fen"],
                    "tap_id": x["tap_id"], "reason": x["reason"]})
    return out.getvalue()


FORMATS = {"table": as_table, "json": as_json, "csv": as_csv}
