"""Replay a day (or weeks) of taps through validators and the whole transaction core.

For each row of a taps CSV (the ``tapsim fare price`` format), the card named in the cards
file is tapped on the real contactless kernel (in process, its chip state kept per card and
in the database between replays), the kernel's record becomes a tap record, and the record
goes through the transaction core: fares from the fare engine, deferred authorization at the
in-process issuer (real ARQC verification), deny list, debt recovery, ledger, storage.

The replay keeps a simulated clock: cards are issued before the first tap (in the state the
cards file asks for), taps go in time order in batches (at most ``batch`` taps of at most
five minutes, as validators upload them, one transaction each), holders' branch actions happen at
their time, and at every service day's end the core closes due aggregates and runs the
scheduled debt recovery (until ``until``, by default the end of the last tap's service day).
Every id is derived from the tap ids, so replaying the same files twice charges nothing twice.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from backoffice.branch import BranchError, act, end_of, issue, replace
from backoffice.outcomes import BatchResult, Outcome
from backoffice.records import from_us
from backoffice.reports import Reconciliation
from backoffice.service import TransactionCore
from backoffice.taps import Action, MalformedTapError, TapRecord, parse_tap, tap_to_mapping
from emv.card.card import VirtualCard
from emv.card.image import CardImage, personalise
from emv.card.state import CardState
from emv.kernel import Kernel, TerminalConfig, TransactionInput, run
from emv.oda import CaKeys, builtin_test_ca_keys
from fare.model import Feed, Tap
from fare.tapfile import RowProblem, TapFileError, parse_taps
from issuer.codes import DESCRIPTIONS, ResponseCode
from issuer.models import Account, AuthRecord
from replay.cardsfile import CardEvent, CardsFile, CardSpec
from replay.kernel_taps import tap_record

VCARD_META = "replay.vcard."  # + pan token: the chip's counters between replays
EVENT_META = "replay.event."  # + hash of (card, time, action, amount): done once
DEFAULT_BATCH = 500
# Validators upload what they took within this long: a batch holds the taps of one window, and
# the core decides at the window's last tap (its clock).
UPLOAD_WINDOW = timedelta(minutes=5)
_SETUP_LEAD = timedelta(days=30)  # accounts open this long before the first tap


class ReplayError(ValueError):
    """A replay that cannot start (inconsistent cards file, unreadable taps file)."""


@dataclass(frozen=True, slots=True)
class ReplayTap:
    """A good row of the taps CSV: the fare engine's tap (card = card id) and where it was."""

    line: int
    tap: Tap
    operator_id: str
    validator_id: str


@dataclass(frozen=True, slots=True)
class TapsFile:
    """A taps CSV read: the good rows, a problem per bad row, every row's fields by line."""

    taps: list[ReplayTap]
    problems: list[RowProblem]
    rows: dict[int, dict[str, str]]


def read_taps(text: str, feed: Feed) -> TapsFile:
    """The rows of a taps CSV (``fare.tapfile`` format, plus optional ``operator_id`` and
    ``validator_id`` columns); a problem with its line for each bad row."""
    try:
        taps, problems = parse_taps(text, feed)
    except TapFileError as exc:
        raise ReplayError(str(exc)) from None
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")))
    header = next(reader)
    rows: dict[int, dict[str, str]] = {}
    where: dict[str, int] = {}
    for values in reader:
        line = reader.line_num
        if len(values) == len(header):
            rows[line] = row = dict(zip(header, values, strict=True))
            where.setdefault(row["tap_id"], line)
        elif values and values != [""]:
            rows[line] = {"fields": ",".join(values)}
    out = []
    for tap in taps:
        line = where[tap.tap_id]
        row = rows[line]
        out.append(ReplayTap(line, tap, row.get("operator_id") or feed.name,
                             row.get("validator_id") or f"replay-{tap.route_id}"))  # fmt: skip
    return TapsFile(out, problems, rows)


# -- what the replay reports --------------------------------------------------------------


@dataclass(slots=True)
class ReplayReport:
    """Everything a replay did, by card id (JSON shape: backoffice/README.md)."""

    feed: str
    db: str
    currency: str
    rows: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    cards: list[dict[str, Any]] = field(default_factory=list)
    fares: list[dict[str, Any]] = field(default_factory=list)
    charges: list[dict[str, Any]] = field(default_factory=list)
    declines: list[dict[str, Any]] = field(default_factory=list)
    recoveries: list[dict[str, Any]] = field(default_factory=list)
    written_off: list[dict[str, Any]] = field(default_factory=list)
    deny_list: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[dict[str, Any]] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    branch: list[dict[str, Any]] = field(default_factory=list)
    reconciliation: dict[str, Any] = field(default_factory=dict)
    acquirer: dict[str, Any] | None = None  # with --issuer iso8583://: the link's figures

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name != "acquirer" or self.acquirer is not None}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2)


def reconciliation_dict(rec: Reconciliation) -> dict[str, Any]:
    f = rec.figures
    return {
        "ok": rec.ok,
        "problems": rec.problems,
        "tap_fares": f.tap_fares,
        "ledger": dict(sorted(f.balances.items())),
        "issuer_captured": f.issuer_captured,
        "open_aggregates": f.open_aggregates,
        "debts_in_recovery": f.debts_open,
        "debts_written_off": f.debts_written_off,
        "settlement": [
            {"operator": s.operator_id, "service_day": s.service_day, "taps": s.taps,
             "fares": s.fares, "collected": s.collected, "outstanding": s.outstanding,
             "written_off": s.written_off, "balanced": s.balanced}
            for s in f.lines
        ],
    }  # fmt: skip


# -- the replay ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Rig:
    """One card in the field: its spec, its chip, its token."""

    spec: CardSpec
    card: VirtualCard
    token: str
    touched: bool = False


class Replay:
    """One replay of a taps file against a core (see the module docstring)."""

    def __init__(
        self,
        core: TransactionCore,
        feed: Feed,
        cards: CardsFile,
        *,
        token_key: bytes,
        batch: int = DEFAULT_BATCH,
        progress: Callable[[int, int], None] | None = None,
        ca_keys: CaKeys | None = None,
    ) -> None:
        if batch < 1:
            raise ReplayError("batch size must be at least 1")
        self.core = core
        self.feed = feed
        self.cards = cards
        self.batch = batch
        self.progress = progress
        self._config = TerminalConfig(
            ca_keys=ca_keys if ca_keys is not None else builtin_test_ca_keys(), token_key=token_key)
        self._images: dict[tuple[str, str], CardImage] = {}
        self._rigs: dict[str, _Rig] = {}
        self._names: dict[str, str] = {}  # pan token -> card id
        for spec in cards.cards.values():
            token = core.issuer.token_of(spec.profile.pan)
            self._names[token] = spec.card_id
        self._day = core.config.aggregation.service_day
        self.report = ReplayReport(feed.name, core.store.url, feed.currency)
        self._lines: dict[str, int] = {}
        self._row_taps: dict[int | None, str | None] = {}
        self._by_mask: dict[str, str] | None = None
        self._done = 0
        self._total = 0

    # -- set-up --------------------------------------------------------------------------

    def _name(self, token: str, masked: str = "") -> str:
        return self._names.get(token) or masked or token[:8]

    def _issue_all(self, first: datetime) -> list[dict[str, Any]]:
        """Issue the cards the database does not hold yet, in their cards-file state; the
        report's card lines (kept by the caller: a redone call must not report twice)."""
        issuer = self.core.issuer
        lines: list[dict[str, Any]] = []
        successors = {s.replaced_by for s in self.cards.cards.values() if s.replaced_by}
        before = first - timedelta(days=1)
        for spec in sorted(self.cards.cards.values(), key=lambda s: s.card_id):
            token = issuer.token_of(spec.profile.pan)
            if spec.card_id in successors:
                continue  # issued by the replacement of its predecessor
            if token in issuer.cards:
                lines.append(self._card_line(spec, token, issued=False))
                continue
            policy = issuer.policy(spec.bank)
            opened = first - _SETUP_LEAD
            if spec.state == "dormant":
                opened -= policy.dormancy_after
            expires_at = end_of(spec.expires) if spec.expires is not None else None
            if spec.state == "expired":
                expires_at = expires_at or first - timedelta(days=2)
                if expires_at > before:
                    raise ReplayError(f"card {spec.card_id}: state 'expired' needs the bank's "
                                      "expiry before the first tap")  # fmt: skip
            issue(issuer, spec.profile, bank=spec.bank, balance=spec.balance,
                  currency=self.feed.currency, now=opened, expires_at=expires_at)  # fmt: skip
            if spec.state != "not-activated":
                act(issuer, token, "activate", opened)
            action = {"lost": "lost", "sealed": "seal", "dormant": "dormant", "expired": "expire",
                      "cancelled": "cancel"}.get(spec.state)  # fmt: skip
            if action is not None:
                act(issuer, token, action, before)
            if spec.replaced_by is None:
                lines.append(self._card_line(spec, token, issued=True))
            else:
                new = self.cards.cards[spec.replaced_by]
                if new.state not in ("active", "not-activated"):
                    raise ReplayError(f"card {new.card_id}: a replacement card starts active "
                                      "or not activated")  # fmt: skip
                replace(issuer, token, new.profile, reason=spec.replace_reason, now=before,
                        bank=new.bank, balance=new.balance)  # fmt: skip
                new_token = issuer.token_of(new.profile.pan)
                if new.state == "active":
                    act(issuer, new_token, "activate", before)
                lines.append(self._card_line(spec, token, issued=True))
                lines.append(self._card_line(new, new_token, issued=True))
        return lines

    def _card_line(self, spec: CardSpec, token: str, *, issued: bool) -> dict[str, Any]:
        issuer = self.core.issuer
        card = issuer.card(token)
        account = issuer.account(card.account_id)
        return {
            "card": spec.card_id, "masked_pan": card.masked_pan, "bank": card.bank_id,
            "state": card.state.value, "balance": account.balance, "issued": issued,
        }  # fmt: skip

    def _rig(self, spec: CardSpec) -> _Rig:
        rig = self._rigs.get(spec.card_id)
        if rig is None:
            key = (spec.profile.source, spec.profile.pan)
            image = self._images.get(key)
            if image is None:
                image = self._images[key] = personalise(spec.profile)
            token = self.core.issuer.token_of(spec.profile.pan)
            state = None
            saved = self.core.store.meta(VCARD_META + token)
            if saved:
                state = CardState.from_dict(json.loads(saved))
            rig = self._rigs[spec.card_id] = _Rig(spec, VirtualCard(image, state), token)
        return rig

    # -- running -------------------------------------------------------------------------

    def run(
        self, taps_file: TapsFile, *, source: str, until: datetime | None = None
    ) -> ReplayReport:
        """Replay the good rows (bad ones are kept as rejects) and report."""
        taps, problems = taps_file.taps, taps_file.problems
        self.report.rows = len(taps) + len(problems)
        self._total = len(taps)
        self._lines = {rt.tap.tap_id: rt.line for rt in taps}
        events = [(e.at, spec.card_id, e) for spec in self.cards.cards.values()
                  for e in spec.events]  # fmt: skip
        times = [rt.tap.time for rt in taps] + [at for at, _, _ in events]
        auths_before = set(self.core.issuer.auths)
        if not times:  # nothing to tap: keep the bad rows, and say so
            if problems:
                now = datetime.now(UTC)
                self._collect(self.core.run(lambda: self._reject_rows(taps_file, source, now)),
                              now)
            self._finish(auths_before, None, set())
            return self.report
        first = min(times)
        # The answers are read back from the database too: a replay longer than the
        # late-arrival horizon prunes the older ones from the issuer's memory (issue 15).
        stored_before = {a.request_id for a in self.core.store.issuer_auths_from(first)}
        self.report.cards += self.core.run(lambda: self._issue_all(first))
        if problems:
            self._collect(self.core.run(lambda: self._reject_rows(taps_file, source, first)),
                          first)
        timeline = self._timeline(taps, events, first, until)
        pending: list[ReplayTap] = []
        for when, _, kind, item in timeline:
            if kind == "tap":
                assert isinstance(item, ReplayTap)
                if pending and (len(pending) >= self.batch
                                or when - pending[0].tap.time > UPLOAD_WINDOW):  # fmt: skip
                    self._flush(pending)
                    pending = []
                pending.append(item)
                continue
            if pending:
                self._flush(pending)
                pending = []
            if kind == "tick":
                self._collect(self.core.run(functools.partial(self._tick, when)), when)
            else:
                assert isinstance(item, tuple)
                self._branch_once(*item)
        if pending:
            self._flush(pending)
        self._finish(auths_before, first, stored_before)
        return self.report

    def _timeline(
        self, taps: list[ReplayTap], events: list[tuple[datetime, str, Any]], first: datetime,
        until: datetime | None,
    ) -> list[tuple[datetime, int, str, object]]:  # fmt: skip
        """Ticks (day ends), branch actions and taps in time order (that order on a tie)."""
        items: list[tuple[datetime, int, str, object]] = []
        last = max([rt.tap.time for rt in taps] + [at for at, _, _ in events])
        end = until or self._day.end_of(self._day.day_of(last))
        if end < last:
            raise ReplayError(f"--until {end.isoformat()} is before the last tap or event")
        day = self._day.day_of(first)
        while (tick := self._day.end_of(day)) <= end:
            items.append((tick, 0, "tick", None))
            day += timedelta(days=1)
        if not items or items[-1][0] < end:
            items.append((end, 0, "tick", None))
        items += [(at, 1, "branch", (card_id, e)) for at, card_id, e in events]
        items += [(rt.tap.time, 2, "tap", rt) for rt in taps]
        items.sort(key=lambda i: (i[0], i[1]))
        return items

    def _flush(self, rows: list[ReplayTap]) -> None:
        """Tap each row's card on the kernel, then ingest the batch in one transaction."""
        records: list[TapRecord] = []
        bad: list[tuple[ReplayTap, MalformedTapError]] = []
        for rt in rows:
            try:
                record = self._tap(rt)
            except MalformedTapError as exc:
                bad.append((rt, exc))
                continue
            if record is not None:
                records.append(record)
        touched = [r for r in self._rigs.values() if r.touched]
        meta = {VCARD_META + r.token: json.dumps(r.card.state.to_dict()) for r in touched}
        now = rows[-1].tap.time

        def batch() -> BatchResult:
            self.core.adopt_cards(records)  # cards evicted when idle (backoffice.idle)
            res = self.core.core.ingest(records, now)
            for rt, exc in bad:
                more = self.core.core.reject(_raw(rt), exc.field, exc.reason, rt.tap.tap_id, now)
                res.rejected += more.rejected
                res.duplicates += more.duplicates
                res.events += more.events
            return res

        self._collect(self.core.run(batch, meta=meta), now)
        for r in touched:
            r.touched = False
        self._done += len(rows)
        if self.progress is not None:
            self.progress(self._done, self._total)

    def _tap(self, rt: ReplayTap) -> TapRecord | None:
        """The kernel's record of one tap, or None (refused at the validator, reported)."""
        tap = rt.tap
        spec = self.cards.cards.get(tap.card)
        if spec is None:
            raise MalformedTapError("card", f"no card {tap.card!r} in the cards file", tap.tap_id)
        rig = self._rig(spec)
        rig.touched = True
        rig.card.power_on()
        txn = TransactionInput(
            amount=0, date=tap.time.date(), at=tap.time,
            unpredictable_number=hashlib.sha256(tap.tap_id.encode()).digest()[:4],
        )  # fmt: skip
        result = run(Kernel(self._config, txn), rig.card.process)
        try:
            category = tap.rider_category
            if category is None and result.holder_category in self.feed.rider_categories:
                category = result.holder_category  # the validator reads it off the card
            record = tap_record(
                result, tap_id=tap.tap_id, time=tap.time, validator_id=rt.validator_id,
                operator_id=rt.operator_id, stop_id=tap.stop_id, route_id=tap.route_id,
                action=Action.TAP_OFF if tap.action == "off" else Action.TAP_ON,
                rider_category=category or "", fare_media=tap.fare_media or "",
            )  # fmt: skip
        except MalformedTapError as exc:
            if exc.field != "kernel":
                raise
            self.report.refused.append({
                "line": rt.line, "tap_id": tap.tap_id, "card": spec.card_id,
                "time": tap.time.isoformat(), "outcome": result.outcome.value,
                "reason": result.reason or exc.reason,
            })  # fmt: skip
            return None
        return parse_tap(tap_to_mapping(record))  # the gate every record passes

    def _reject_rows(self, taps_file: TapsFile, source: str, now: datetime) -> BatchResult:
        res = BatchResult()
        for p in taps_file.problems:
            row = taps_file.rows.get(p.line, {})
            raw = {"source": source, "line": p.line, "row": row}
            tap_id = row.get("tap_id") or None
            more = self.core.core.reject(raw, p.field or "row", p.message, tap_id, now)
            res.rejected += more.rejected
            res.duplicates += more.duplicates
            for e in more.events:
                res.events.append(Outcome(e.kind, e.masked_pan, f"line {p.line}", e.amount,
                                          e.code, e.detail))  # fmt: skip
                self._lines[f"line {p.line}"] = p.line
                self._row_taps[p.line] = tap_id
        return res

    def _tick(self, t: datetime) -> BatchResult:
        res = self.core.core.close_due(t)
        more = self.core.core.run_recovery(t)
        res.events += more.events
        return res

    def _branch_once(self, card_id: str, event: CardEvent) -> None:
        """A cards-file branch action, unless an earlier replay into this database did it."""
        token = self.core.issuer.token_of(self.cards.cards[card_id].profile.pan)
        key = _event_key(token, event)
        if self.core.store.meta(key) is None:
            self.report.branch.append(self.core.run(
                functools.partial(self._branch, card_id, event),
                meta={key: event.at.isoformat()}))  # fmt: skip

    def _branch(self, card_id: str, event: CardEvent) -> dict[str, Any]:
        spec = self.cards.cards[card_id]
        token = self.core.issuer.token_of(spec.profile.pan)
        line: dict[str, Any] = {"card": card_id, "time": event.at.isoformat(),
                                "action": event.action, "amount": event.amount}  # fmt: skip
        try:
            done = act(self.core.issuer, token, event.action, event.at, amount=event.amount)
        except BranchError as exc:
            line["error"] = str(exc)  # the holder was turned away; the replay goes on
        else:
            line["result"] = (f"balance {done.balance}" if isinstance(done, Account)
                              else f"state {done.state.value}")  # fmt: skip
        return line

    # -- reporting -----------------------------------------------------------------------

    def _collect(self, res: BatchResult, when: datetime) -> None:
        counts = self.report.counts
        for key, n in (("accepted", res.accepted), ("duplicates", res.duplicates),
                       ("rejected", res.rejected)):  # fmt: skip
            counts[key] = counts.get(key, 0) + n
        t = when.isoformat()
        for e in res.events:
            who = self._name(e.ref, e.masked_pan) if e.kind.startswith("deny") else \
                self._name_of_masked(e.masked_pan)
            if e.kind == "charged":
                self.report.charges.append({"time": t, "card": who, "aggregate": e.ref,
                                            "amount": e.amount, "code": e.code,
                                            "closed_by": e.detail})  # fmt: skip
            elif e.kind == "recovered":
                self.report.recoveries.append({
                    "time": t, "card": who, "debt": e.ref, "amount": e.amount, "code": e.code,
                    "by": "tap" if e.detail.startswith("rec:") else "schedule", "request": e.detail,
                })  # fmt: skip
            elif e.kind == "written_off":
                self.report.written_off.append({"time": t, "card": who, "debt": e.ref,
                                                "amount": e.amount, "code": e.code})  # fmt: skip
            elif e.kind in ("deny_add", "deny_remove"):
                self.report.deny_list.append({
                    "time": t, "card": who, "masked_pan": e.masked_pan,
                    "op": "add" if e.kind == "deny_add" else "remove",
                    "reason": _code_text(e.code) if e.kind == "deny_add" else "debts recovered",
                })  # fmt: skip
            elif e.kind == "rejected":
                field_name, _, reason = e.detail.partition(": ")
                line = self._lines.get(e.ref)
                tap_id = self._row_taps.get(line) if e.ref.startswith("line ") else e.ref
                self.report.rejects.append({"line": line, "tap_id": tap_id, "field": field_name,
                                            "reason": reason})  # fmt: skip
            elif e.kind == "alert":
                self.report.alerts.append({"time": t, "card": who, "kind": e.detail,
                                           "ref": e.ref, "code": e.code})  # fmt: skip

    def _name_of_masked(self, masked: str) -> str:
        """The card id of a mask, when one card of the file has it (else the mask)."""
        if self._by_mask is None:
            count: dict[str, int] = {}
            for spec in self.cards.cards.values():
                count[spec.masked_pan] = count.get(spec.masked_pan, 0) + 1
            self._by_mask = {s.masked_pan: s.card_id for s in self.cards.cards.values()
                             if count[s.masked_pan] == 1}  # fmt: skip
        return self._by_mask.get(masked, masked)

    def _finish(self, auths_before: set[str], first: datetime | None,
                stored_before: set[str]) -> None:
        """The answers the replay got: in the issuer's memory and not there before it, and
        (pruned from memory meanwhile) in the database from ``first`` on and not there
        before it (``stored_before``)."""
        issuer = self.core.issuer
        report = self.report
        found = {rid: a for rid, a in issuer.auths.items() if rid not in auths_before}
        if first is not None:
            found.update((a.request_id, a) for a in self.core.store.issuer_auths_from(first)
                         if a.request_id not in stored_before)
        new: list[AuthRecord] = list(found.values())
        for a in sorted(new, key=lambda a: (a.at, a.request_id)):
            if a.code is ResponseCode.APPROVED:
                continue
            report.declines.append({
                "time": a.at.isoformat(), "card": self._name(a.pan_token), "request": a.request_id,
                "kind": a.kind.value, "amount": a.amount, "code": a.code.value,
                "meaning": DESCRIPTIONS[a.code], "flags": sorted(f.value for f in a.flags),
            })  # fmt: skip
        rows = self.core.store.tap_rows(self._lines)
        for r in rows:
            report.fares.append({
                "line": self._lines.get(r.tap_id), "tap_id": r.tap_id,
                "card": self._name(r.pan_token, r.masked_pan),
                "time": from_us(r.time_us, r.utc_offset_s).isoformat(),
                "route": r.route_id, "action": r.action, "amount": r.amount, "why": r.explain,
            })  # fmt: skip
        for line in report.cards:
            token = issuer.token_of(self.cards.cards[line["card"]].profile.pan)
            card = issuer.card(token)
            account = issuer.account(card.account_id)
            line["state_after"] = card.state.value
            line["balance_after"] = account.balance
            line["deny_listed"] = token in self.core.core.deny
        report.rejects.sort(key=lambda x: (x["line"] is None, x["line"] or 0, x["tap_id"] or ""))
        report.counts["refused_by_validator"] = len(report.refused)
        report.counts.setdefault("accepted", 0)
        report.reconciliation = reconciliation_dict(self.core.reconcile())


def _raw(rt: ReplayTap) -> Mapping[str, object]:
    t = rt.tap
    return {"line": rt.line, "tap_id": t.tap_id, "card": t.card, "time": t.time.isoformat(),
            "stop_id": t.stop_id, "route_id": t.route_id, "action": t.action}  # fmt: skip


def _event_key(token: str, event: CardEvent) -> str:
    """The meta row that says a cards-file branch action was carried out (once)."""
    text = f"{token}|{event.at.isoformat()}|{event.action}|{event.amount}"
    return EVENT_META + hashlib.sha256(text.encode()).hexdigest()[:32]


def _code_text(code: str) -> str:
    try:
        rc = ResponseCode(code)
    except ValueError:
        return code
    return f"{rc.value} {DESCRIPTIONS[rc]}"
