"""The transaction core: taps in; fares, deferred authorization, deny list and ledger out.

:class:`BackOffice` holds the working state of every card in memory (one writer per
database) and turns each batch of tap records into decisions, using the pure functions of
:mod:`backoffice.decisions`, the :class:`~backoffice.pricing.Pricer` and the issuer
behind :class:`~backoffice.ports.IssuerGateway`.  Everything it decides is also kept as
rows (:meth:`BackOffice.drain_changes`) that the service writes in one transaction per
batch; a batch that fails to commit is retried from the last snapshot, and because every
id the core makes (aggregate, request, capture, ledger transaction) is derived from tap
ids, the retry makes the same decisions and nothing is charged twice.

Deferred authorization (UnionPay ODA, Visa/Mastercard MTT):

1. the first tap of an aggregate sends an account verification (``av:``) with its
   cryptogram; a decline puts the card on the deny list, the ride is still accepted;
2. fares accumulate until the spend limit, the maximum travel time or the end of the
   service day; then one charge: a DEFERRED authorization (``chg:``) reusing the verified
   cryptogram, or, when the verification was declined, a RESUBMISSION;
3. a declined charge becomes a debt: recovered by the card's next tap (``rec:``, a fresh
   cryptogram) or by schedule (``rs:``, at most 6 resubmissions in 14 days), else written
   off as first-ride loss.  A card leaves the deny list in the batch that recovers it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Final

from backoffice.changes import TOTALS_KEY, clear_changes, drain_changes, totals_json
from backoffice.decisions import (
    CLOSE_SPEND_LIMIT,
    close_reason,
    due_reason,
    duration_us,
    next_retry,
    priced_alone,
    reprice,
    total_of,
)
from backoffice.horizon import DAY_US as _DAY_US
from backoffice.horizon import NO_FLOOR as _NO_FLOOR
from backoffice.horizon import advance_floor, floor_time
from backoffice.ledger import (
    ACCOUNTS,
    ISSUER_SETTLEMENT,
    RECEIVABLE,
    REVENUE,
    Entry,
    Line,
    transfer,
)
from backoffice.outcomes import BatchResult, Outcome
from backoffice.policy import BackOfficeConfig
from backoffice.ports import IssuerGateway
from backoffice.pricing import FareCharge, Pricer, PricingError
from backoffice.records import (
    Aggregate,
    AggregateRow,
    AggStatus,
    AlertRow,
    CardAtcRow,
    Changes,
    Debt,
    DenyEventRow,
    DenyRow,
    PricedTap,
    RejectRow,
    Snapshot,
    TransitCard,
    atc_seen,
    from_us,
    remember_atc,
    to_us,
)
from backoffice.recovery import deny_add, maybe_lift, recover_by_tap, run_recovery
from backoffice.restore import decode, restore
from backoffice.taps import (
    MalformedTapError,
    TapRecord,
    parse_tap,
    scrub,
    scrub_id,
    tap_to_mapping,
)
from issuer.codes import ResponseCode
from issuer.models import AuthKind, AuthorizationRequest, AuthResponse

# FarePricer.price_lazily: price() given the tap's time in microseconds since the epoch and
# the core's currency, a lone charge's explanation left to the pricer's render(fact).
_PriceLazily = Callable[[object | None, TapRecord, int, str],
                        tuple[object, int, object, list[FareCharge] | None]]
_DAY_BUCKET_US: Final = 900 * 1_000_000  # every UTC offset change falls on a quarter hour
_DAYS_LIMIT: Final = 1 << 16  # quarter hours remembered (over two years)
# The ledger's account names as Final constants: C statics when compiled, not dict lookups.
_RECEIVABLE: Final = RECEIVABLE
_new_line: Final = tuple.__new__  # Line without its generated __new__ (a Python frame)
_REVENUE: Final = REVENUE
_AV: Final = AuthKind.ACCOUNT_VERIFICATION
_DEFERRED: Final = AuthKind.DEFERRED
_RESUBMISSION: Final = AuthKind.RESUBMISSION


class BackOffice:
    """The in-memory transaction core (see the module docstring)."""

    # What the batch so far changed, as rows to write: set and drained by backoffice.changes.
    _new_taps: list[PricedTap]
    _updated_taps: dict[str, PricedTap]
    _rejects: list[RejectRow]
    _entries: list[Entry]
    _dirty_aggs: dict[str, Aggregate]
    _dirty_debts: dict[str, Debt]
    _atc_rows: list[CardAtcRow]
    _deny_set: list[DenyRow]
    _deny_clear: list[str]
    _deny_events: list[DenyEventRow]
    _alerts: list[AlertRow]

    def __init__(
        self,
        pricer: Pricer,
        issuer: IssuerGateway,
        config: BackOfficeConfig | None = None,
        snapshot: Snapshot | None = None,
        *,
        evict_idle: bool = False,
    ) -> None:
        self.pricer = pricer
        # Drop cards idle past the floor when it moves (backoffice.idle): only a core whose
        # store brings them back when they tap again (TransactionCore) asks for it.
        self.evict_idle = evict_idle
        self.issuer = issuer
        self.config = config or BackOfficeConfig()
        if pricer.currency != self.config.currency:
            raise PricingError(
                f"pricer charges in {pricer.currency}, the back office settles in "
                f"{self.config.currency}"
            )
        self._agg = self.config.aggregation
        self._rec = self.config.recovery
        # The policy's figures the per-tap path reads, resolved once.
        self._currency = self.config.currency
        self._spend_limit = self._agg.spend_limit
        self._close_at_day_end = self._agg.close_at_day_end
        self._max_travel_us = duration_us(self._agg.max_travel_time)
        self._days: dict[int, str] = {}  # quarter hour since the epoch -> service day label
        # A pricer that takes the tap's time as microseconds spares working it out twice, and
        # one that can explain a charge later spares a sentence nobody may read.
        self._price_lazily: _PriceLazily | None = getattr(pricer, "price_lazily", None)
        self._render: Callable[[object], str] | None = getattr(pricer, "render", None)
        self.cards: dict[str, TransitCard] = {}
        # Duplicate detection within the late-arrival horizon: the ids of taps from
        # ``_floor_us`` on (by UTC day of tap time, so a day's ids are dropped together);
        # older taps are refused as too late.  ``_high_us``: the newest tap time seen, each
        # capped at its arrival (a validator clock ahead of time cannot push the floor).
        # Moved by backoffice.horizon, rebuilt at start by backoffice.restore.
        self.tap_ids: set[str] = set()
        self._ids_by_day: dict[int, list[str]] = {}
        self._horizon_us = duration_us(self.config.late_horizon)
        self._atc_window = self.config.atc_window
        self._floor_us = _NO_FLOOR
        self._high_us = _NO_FLOOR
        self.reject_ids: set[str] = set()
        self._rejects_by_day: dict[int, list[str]] = {}
        self._totals_written = ""
        self.deny: dict[str, DenyRow] = {}
        self.balances: dict[str, int] = dict.fromkeys(ACCOUNTS, 0)
        self.fares_total = 0
        self._fares_unposted = 0
        self._open: dict[str, Aggregate] = {}
        self._debtors: set[str] = set()
        self._dirty_cards: dict[str, TransitCard] = {}  # cards whose row is to be written
        clear_changes(self)
        if snapshot is not None:
            restore(self, snapshot)

    # -- public entry points -------------------------------------------------------------

    def ingest(
        self, records: Iterable[Mapping[str, object] | TapRecord], now: datetime
    ) -> BatchResult:
        """Take a batch of tap records (duplicates ignored, malformed ones kept as rejects)."""
        res = BatchResult()
        now_us = to_us(now)
        try:
            for raw in records:
                if isinstance(raw, TapRecord):
                    tap = raw
                else:
                    try:
                        tap = parse_tap(raw)
                    except MalformedTapError as exc:
                        self._reject(raw, exc.field, exc.reason, exc.tap_id, now_us=now_us,
                                     res=res)  # fmt: skip
                        continue
                self._accept(tap, now, now_us, res)
        finally:
            self._post_fares()
        if self._high_us - self._horizon_us >= self._floor_us + _DAY_US:
            advance_floor(self)
        return res

    @property
    def floor(self) -> datetime | None:
        """The oldest tap time still taken (older taps are refused as too late), or None."""
        return floor_time(self._floor_us)

    def _post_fares(self) -> None:
        """Move the fares of the taps accepted so far into the ledger balances (kept as one
        running sum while a batch is ingested: two fewer dict updates a tap)."""
        fares = self._fares_unposted
        if fares:
            self._fares_unposted = 0
            balances = self.balances
            balances[_RECEIVABLE] += fares
            balances[_REVENUE] -= fares

    def reject(
        self, raw: Mapping[str, object], field_name: str, reason: str, tap_id: str | None,
        now: datetime,
    ) -> BatchResult:  # fmt: skip
        """Keep a record refused before it could become a tap record (a bad CSV row, say)
        in the rejects, with where and why; the same record again is a duplicate."""
        res = BatchResult()
        self._reject(raw, field_name, reason, tap_id, now_us=to_us(now), res=res)
        return res

    def close_due(self, now: datetime) -> BatchResult:
        """Close and charge every aggregate whose service day or travel time is over."""
        res = BatchResult()
        for token in sorted(self._open):
            agg = self._open[token]
            reason = due_reason(agg, now, self._agg)
            if reason is not None:
                self._close(self.cards[token], agg, now, reason, res, settle=True)
        return res

    def run_recovery(self, now: datetime) -> BatchResult:
        """Scheduled debt recovery: resubmit every debt whose retry is due
        (:mod:`backoffice.recovery`)."""
        return run_recovery(self, now)

    def drain_changes(self) -> Changes:
        """Rows for everything decided since the last drain (then forgets them; see
        :mod:`backoffice.changes`)."""
        return drain_changes(self)

    def totals_json(self) -> str:
        """The running figures a restart reads instead of summing the whole ledger (see
        :func:`backoffice.changes.totals_json`)."""
        return totals_json(self)

    def open_aggregates(self) -> list[Aggregate]:
        return [self._open[t] for t in sorted(self._open)]

    def unpaid_debts(self) -> list[Debt]:
        return [d for t in sorted(self._debtors) for d in self.cards[t].debts.values()]

    # -- a tap -----------------------------------------------------------------------------

    def _accept(self, tap: TapRecord, now: datetime, now_us: int, res: BatchResult) -> None:
        # Runs for every tap: attributes are read once, times are integers (microseconds).
        tap_id = tap.tap_id
        if tap_id in self.tap_ids:
            res.duplicates += 1
            return
        token = tap.pan_token
        atc = tap.atc
        card = self.cards.get(token)
        if card is not None and card.raw_state is not None:
            try:
                decode(self, card)
            except PricingError as exc:
                self._reject(tap, "fare", f"cannot price: {exc}", tap_id, now_us=now_us, res=res)
                return
        t = tap.time
        try:
            us = to_us(t)
        except TypeError:  # no UTC offset: refused as before (the service day, the pricer)
            self._agg.service_day.day_of(t)
            try:
                self.pricer.price(card.fare_state if card is not None else None, tap)
            except PricingError as exc:
                self._reject(tap, "fare", f"cannot price: {exc}", tap_id, now_us=now_us, res=res)
                return
            raise
        if us < self._floor_us:
            self._reject(
                tap, "time", f"too late: older than the late-arrival horizon "
                f"({self.config.late_horizon} behind the newest tap)",
                tap_id, now_us=now_us, res=res,
            )  # fmt: skip
            return
        window = self._atc_window
        if card is not None and atc_seen(card, atc, window):
            if card.atc_high - atc >= window:
                self._reject(
                    tap, "atc", f"ATC below this card's window of the last {window} "
                    "(replayed, cloned or too old)",
                    tap_id, now_us=now_us, res=res, alert="stale_atc",
                )  # fmt: skip
            else:
                self._reject(
                    tap, "atc", "ATC seen before for this card (replayed or cloned)",
                    tap_id, now_us=now_us, res=res, alert="replayed_atc",
                )  # fmt: skip
            return
        day = self._days.get(us // _DAY_BUCKET_US)
        if day is None:
            day = self._day_of(us, t)
        agg = card.open_agg if card is not None else None
        closing = None
        if agg is not None:
            closing = close_reason(agg, us, day, self._close_at_day_end, self._max_travel_us)
        currency = self._currency
        # Price first: a tap the pricer refuses is rejected before anything changes.
        repriced = None
        why: object = None  # a lazily explained charge (see _price_lazily)
        try:
            if agg is not None and closing is None and (
                us < agg.last_us or (us == agg.last_us and tap_id < agg.last_tap_id)
            ):
                late = PricedTap(tap, day, 0, "", agg.aggregate_id, 0, 0, us)
                state, repriced = reprice(
                    self.pricer, agg.fare_state_at_open, [*agg.taps, late], currency
                )
                amount, explain = 0, ""
            else:
                fare_state = card.fare_state if card is not None else None
                charges: list[FareCharge] | None = None
                try:
                    if self._price_lazily is not None:
                        state, amount, why, charges = self._price_lazily(
                            fare_state, tap, us, currency
                        )
                    else:
                        state, charges = self.pricer.price(fare_state, tap)
                except PricingError:
                    if fare_state is None:
                        raise
                    state, charges = fare_state, priced_alone(self.pricer, tap)  # a late tap
                if charges is None:
                    explain = ""  # render(why), when read
                elif len(charges) == 1 and charges[0].currency == currency:
                    amount, explain = charges[0].amount, charges[0].explain
                else:
                    amount, explain = total_of(charges, currency)
        except PricingError as exc:
            self._reject(tap, "fare", f"cannot price: {exc}", tap_id, now_us=now_us, res=res)
            return

        if card is None:
            card = TransitCard(token, tap.masked_pan)
            self.cards[token] = card
        remember_atc(card, atc, window)
        self.tap_ids.add(tap_id)
        bucket = us // _DAY_US
        if bucket < card.atc_unsaved:  # noqa: PLR1730 - no call on the per-tap path
            card.atc_unsaved = bucket
        if bucket > card.last_day:  # noqa: PLR1730 - no call on the per-tap path
            card.last_day = bucket
        ids = self._ids_by_day.get(bucket)
        if ids is None:
            ids = self._ids_by_day[bucket] = []
        ids.append(tap_id)
        seen = us if us < now_us else now_us
        if seen > self._high_us:  # noqa: PLR1730 - no call on the per-tap path
            self._high_us = seen
        res.accepted += 1
        if agg is not None and closing is not None:
            self._close(card, agg, now, closing, res)
        auth: tuple[str, AuthResponse] | None = None
        if card.debts:
            auth = recover_by_tap(self, card, tap, now, res)
        agg = card.open_agg
        if agg is None:
            agg = self._open_aggregate(card, tap, us, day, now, res, auth=auth)

        if repriced is None:
            priced = PricedTap(tap, day, amount, explain, agg.aggregate_id, amount, now_us, us)
            if why is not None and self._render is not None:
                priced.explain_later(why, self._render)
        else:
            for p, new_amount, new_explain in repriced:
                if p.tap is tap:
                    p.amount, p.explain = new_amount, new_explain
                    p.posted, p.received_us = new_amount, now_us
                    priced = p
                elif new_amount != p.amount or new_explain != p.explain:
                    self._adjust(p, new_amount, new_explain, tap_id, agg)
        amount = priced.amount
        agg.taps.append(priced)
        self._new_taps.append(priced)  # once: tap ids are unique (tap_ids)
        self.fares_total += amount
        self._fares_unposted += amount  # RECEIVABLE +, REVENUE - (see _post_fares)
        agg.total += amount
        if state is not card.fare_state:
            card.fare_state = state
            if not card.dirty:
                self._dirty(card)
        agg.tap_count += 1
        if us > agg.last_us or (us == agg.last_us and tap_id > agg.last_tap_id):
            agg.last_us, agg.last_tap_id = us, tap_id
        agg.first_us = min(agg.first_us, us)
        # An open aggregate's row is written when it opens and when it closes: in between,
        # its total and its taps are the taps rows (see backoffice.restore).
        if agg.total >= self._spend_limit:
            self._close(card, agg, now, CLOSE_SPEND_LIMIT, res)

    def _day_of(self, us: int, t: datetime) -> str:
        """The service day label of a tap at ``us`` (= ``t``), remembered per quarter hour when
        the whole quarter hour is on one service day (in one UTC offset of the service day's
        zone, so its local time runs straight)."""
        service_day = self._agg.service_day
        label = service_day.day_of(t).isoformat()
        bucket = us // _DAY_BUCKET_US
        first = from_us(bucket * _DAY_BUCKET_US)
        last = from_us((bucket + 1) * _DAY_BUCKET_US - 1)
        tz = service_day.tz
        if (
            first.astimezone(tz).utcoffset() == last.astimezone(tz).utcoffset()
            and service_day.day_of(first) == service_day.day_of(last)
            and len(self._days) < _DAYS_LIMIT
        ):
            self._days[bucket] = label
        return label

    def _dirty(self, card: TransitCard) -> None:
        """The card's row is to be written with this batch."""
        if not card.dirty:
            card.dirty = True
            self._dirty_cards[card.pan_token] = card

    def _adjust(
        self, p: PricedTap, new_amount: int, explain: str, cause: str, agg: Aggregate
    ) -> None:
        """A late tap changed an earlier tap's fare: post the difference, keep the new price."""
        diff = new_amount - p.amount
        if diff:
            txn = f"adj:{p.tap.tap_id}:{cause}"
            line = [Line(p.tap.operator_id, p.service_day, diff)]
            self._post(transfer(txn, RECEIVABLE, REVENUE, line, to_us(p.tap.time)))
            self.fares_total += diff
            agg.total += diff
        p.amount, p.explain = new_amount, explain
        self._updated_taps[p.tap.tap_id] = p

    def _post(self, entries: list[Entry]) -> None:
        balances = self.balances
        for e in entries:
            balances[e.debit] += e.amount
            balances[e.credit] -= e.amount
        self._entries.extend(entries)

    # -- aggregates ------------------------------------------------------------------------

    def _authorize(
        self, card: TransitCard, request: AuthorizationRequest, now: datetime, res: BatchResult
    ) -> AuthResponse:
        resp = self.issuer.authorize(request, now)
        for flag in sorted(resp.flags):
            alert_id = hashlib.sha256(f"{request.request_id}|{flag}".encode()).hexdigest()[:32]
            detail = f"issuer answered {resp.code.value} to {request.kind.value}"
            self._alerts.append(
                AlertRow(
                    alert_id, flag.value, card.pan_token, request.request_id, detail, to_us(now)
                )
            )
            res.events.append(
                Outcome(
                    "alert", card.masked_pan, request.request_id, 0, resp.code.value, flag.value
                )
            )
        return resp

    def _open_aggregate(
        self,
        card: TransitCard,
        tap: TapRecord,
        us: int,
        day: str,
        now: datetime,
        res: BatchResult,
        *,
        auth: tuple[str, AuthResponse] | None,
    ) -> Aggregate:
        agg = Aggregate(
            aggregate_id="A:" + tap.tap_id,
            pan_token=card.pan_token,
            service_day=day,
            first_us=us,
            last_us=us,
            last_tap_id=tap.tap_id,
            fare_state_at_open=card.fare_state,
        )
        if auth is None:
            # Positional (issuer.models' field order): a keyword call costs a dict.
            request = AuthorizationRequest(
                "av:" + agg.aggregate_id, card.pan_token, _AV, self._agg.nominal_amount,
                self._currency, self.config.merchant_id, tap.atc, tap.arqc, tap.ac_data,
            )  # fmt: skip
            resp = self._authorize(card, request, now, res)
            auth = (request.request_id, resp)
            if resp.approved and resp.hold_id is not None:
                agg.nominal_hold = resp.hold_id
            if not resp.approved:
                deny_add(self, card, resp.code.value, now, res)
        agg.auth_ref, agg.verified = auth[0], auth[1].approved
        agg.atc, agg.arqc, agg.ac_data = tap.atc, tap.arqc, tap.ac_data
        card.open_agg = agg
        self._open[card.pan_token] = agg
        self._dirty_aggs[agg.aggregate_id] = agg
        self._dirty(card)
        return agg

    def _close(
        self,
        card: TransitCard,
        agg: Aggregate,
        now: datetime,
        reason: str,
        res: BatchResult,
        *,
        settle: bool = False,
    ) -> None:
        if settle:  # no tap closes it: the pricer may have fares that fall due now
            self._settle_fares(card, agg, now)
        sums: dict[str, dict[str, int]] = {}  # service day -> operator -> amount
        for p in agg.taps:
            by_op = sums.get(p.service_day)
            if by_op is None:
                by_op = sums[p.service_day] = {}
            op = p.tap.operator_id
            by_op[op] = by_op.get(op, 0) + p.amount
        agg.lines = [
            _new_line(Line, (op, day, amt))
            for op, day, amt in sorted(
                (op, day, amt) for day, by_op in sums.items() for op, amt in by_op.items()
            )
            if amt
        ]
        agg.taps = []
        agg.closed_at = now
        agg.close_reason = reason
        card.open_agg = None
        self._open.pop(card.pan_token, None)
        self._dirty_aggs[agg.aggregate_id] = agg
        self._dirty(card)
        if agg.nominal_hold is not None:
            self.issuer.release(agg.nominal_hold, now)
        if agg.total <= 0:
            agg.status = AggStatus.CHARGED
            maybe_lift(self, card, now, res)
            return
        verified = agg.verified
        request = AuthorizationRequest(
            "chg:" + agg.aggregate_id, card.pan_token, _DEFERRED if verified else _RESUBMISSION,
            agg.total, self._currency, self.config.merchant_id,
            agg.atc if verified else None, agg.arqc if verified else None,
            agg.ac_data if verified else None, agg.auth_ref,
        )  # fmt: skip
        resp = self._authorize(card, request, now, res)
        agg.charge_ref = request.request_id
        agg.charge_code = resp.code.value
        if resp.approved:
            assert resp.hold_id is not None
            self.issuer.capture(resp.hold_id, agg.total, "cap:" + request.request_id, now)
            self._post(
                transfer(request.request_id, ISSUER_SETTLEMENT, RECEIVABLE, agg.lines, to_us(now))
            )
            agg.status = AggStatus.CHARGED
            res.events.append(
                Outcome(
                    "charged", card.masked_pan, agg.aggregate_id, agg.total, resp.code.value, reason
                )
            )
            maybe_lift(self, card, now, res)
            return
        agg.status = AggStatus.DEBT
        debt = Debt(
            debt_id=agg.aggregate_id,
            pan_token=card.pan_token,
            amount=agg.total,
            lines=agg.lines,
            original_ref=agg.auth_ref,
            created_at=now,
            next_at=None,
            last_code=resp.code.value,
        )
        debt.next_at = next_retry(debt, self._rec)
        card.debts[debt.debt_id] = debt
        self._debtors.add(card.pan_token)
        self._dirty_debts[debt.debt_id] = debt
        res.events.append(
            Outcome(
                "declined", card.masked_pan, agg.aggregate_id, agg.total, resp.code.value, reason
            )
        )
        if resp.code is not ResponseCode.ISSUER_UNAVAILABLE:  # stood in: rides on, a debt
            deny_add(self, card, resp.code.value, now, res)

    def _settle_fares(self, card: TransitCard, agg: Aggregate, now: datetime) -> None:
        try:
            state, charges = self.pricer.close(card.fare_state, now)
        except PricingError:
            return  # the fare stays as priced; the next tap settles the journey
        if state is not card.fare_state:
            card.fare_state = state
            self._dirty(card)
        for charge in charges:
            if charge.currency != self.config.currency or not charge.amount or not agg.taps:
                continue
            target = next((p for p in agg.taps if p.tap.tap_id == charge.tap_id), agg.taps[-1])
            explain = f"{target.explain}; {charge.explain}"
            self._adjust(target, target.amount + charge.amount, explain, "close", agg)

    # -- rejects ---------------------------------------------------------------------------

    def _reject(
        self,
        raw: object,
        field_name: str,
        reason: str,
        tap_id: str | None,
        *,
        now_us: int,
        res: BatchResult,
        alert: str | None = None,
    ) -> None:
        tap_id = scrub_id(tap_id)  # a PAN-like tap id is kept and reported masked
        text = scrub(tap_to_mapping(raw) if isinstance(raw, TapRecord) else raw)
        reject_id = hashlib.sha256(f"{text}|{field_name}|{reason}".encode()).hexdigest()[:32]
        if reject_id in self.reject_ids:
            res.duplicates += 1
            return
        self.reject_ids.add(reject_id)
        day = now_us // _DAY_US
        kept = self._rejects_by_day.get(day)
        if kept is None:
            kept = self._rejects_by_day[day] = []
        kept.append(reject_id)
        self._rejects.append(RejectRow(reject_id, tap_id, field_name, reason, text, now_us))
        res.rejected += 1
        masked = raw.masked_pan if isinstance(raw, TapRecord) else ""
        res.events.append(
            Outcome("rejected", masked, tap_id or reject_id, 0, "", f"{field_name}: {reason}")
        )
        if alert is not None and isinstance(raw, TapRecord):
            self._alerts.append(
                AlertRow(reject_id, alert, raw.pan_token, raw.tap_id, reason, now_us)
            )
            res.events.append(Outcome("alert", masked, raw.tap_id, 0, "", alert))


__all__ = ["TOTALS_KEY", "AggregateRow", "BackOffice"]
