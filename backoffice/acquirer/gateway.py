"""``IssuerGateway`` over ISO 8583: the core's calls as messages to the card's bank.

:class:`NetworkIssuer` is the second adapter of :class:`backoffice.ports.IssuerGateway`
(the first is the in-process ``issuer.service.Issuer``).  The core calls it exactly as
it calls the issuer in process; what changes is that an answer may not come.

* ``authorize``: the request gets a key (field 7, STAN), written with the fields to send
  *before* sending (``acq_requests``, state ``sent``); a repeat (0101/0201, same key)
  follows a timeout, up to ``attempts`` sends; the answer is recorded, then returned.
  The same request id asked again (the core retrying a batch that did not commit) gets
  the recorded answer, or the same key sent again: the bank, idempotent by key, answers
  as before.  A 0200 approved at the bank is authorized *and captured* there, so the
  core's ``capture`` after it is a local confirmation (no message): the charge is in the
  ledger once, when the core commits the batch the approval belongs to.
* no answer after every attempt (bank down, silent, garbage, cut): the bank counts as
  unreachable for ``retry_after`` seconds (requests then get a stand-in answer at once,
  without a message), a 0200 already sent gets a reversal in the store-and-forward table
  (its timeout has passed), a 0100 is forwarded later with the same key, and the core
  gets the stand-in answer (:func:`stand_in`).
* before each request, the store-and-forward items that are due go first, in order:
  reversals (0400, then 0420 advices, until answered; a "21" answer means the original
  was captured: the money is kept as a *credit* of the card, which the core's next
  recovery of that card's debt uses instead of charging again) and forwarded 0100s.
  After a restart the table is read again; requests left ``sent`` by a crash become
  reversals (0200) or forwards (0100).

Stand-in (``AcquirerConfig.stand_in_limit``, fen; the bank unreachable): an account
verification is approved when the limit is above zero (the rider rides at the
operator's risk), else answered "96" (the card is deny-listed); an aggregate's charge up
to the limit is answered "91" (issuer unavailable: the core keeps it as a debt, first-ride
risk, without deny-listing the card; its scheduled resubmission collects it when the bank
is back), above it "96" (a debt and the deny list); debt recovery (``rec:``, ``rs:``) is
answered "91" (the debts stay as they are).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from backoffice.acquirer.journal import Journal, RequestRow, SafRow
from backoffice.acquirer.link import Link, LinkError
from backoffice.acquirer.mapping import (
    AV_MTI,
    FINANCIAL_MTI,
    REVERSAL_ADVICE_MTI,
    AcquirerConfig,
    Key,
    MappingError,
    mti_of,
    repeat_mti,
    request_fields,
    reversal_fields,
)
from backoffice.records import to_us
from backoffice.storage.sql import SqlStore
from isolink.dialect import Dialect, Fields
from issuer.codes import ResponseCode
from issuer.errors import HoldError
from issuer.models import (
    AuthKind,
    AuthorizationRequest,
    AuthResponse,
    Capture,
    Hold,
    HoldStatus,
)

log = logging.getLogger("tapsim.acquirer")

APPROVED = "00"
CAPTURED_NO_ACTION = "21"
NOT_FOUND = "25"
HOLD_PREFIX = "iso:"  # hold ids the adapter gives the core: iso: + request id


def parse_issuer_url(text: str) -> tuple[str, int]:
    """``iso8583://HOST:PORT`` -> (host, port); MappingError naming what is wrong."""
    scheme, sep, rest = text.partition("://")
    if scheme != "iso8583" or not sep:
        raise MappingError(f"issuer {text!r}: write iso8583://HOST:PORT (or 'inprocess')")
    host, sep, port = rest.rstrip("/").rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise MappingError(f"issuer {text!r}: write iso8583://HOST:PORT with a port 1-65535")
    return host.strip("[]"), int(port)


def stand_in(request: AuthorizationRequest, limit: int) -> ResponseCode:
    """The answer the core gets when the bank cannot be reached (module docstring)."""
    if request.kind is AuthKind.ACCOUNT_VERIFICATION:
        ok = limit > 0 and request.amount <= limit
        return ResponseCode.APPROVED if ok else ResponseCode.SYSTEM_MALFUNCTION
    if request.request_id.startswith("chg:") and request.amount > limit:
        return ResponseCode.SYSTEM_MALFUNCTION
    return ResponseCode.ISSUER_UNAVAILABLE


def _code(value: str) -> ResponseCode:
    try:
        return ResponseCode(value)
    except ValueError:  # a code of the bank's that the core does not know: a decline
        return ResponseCode.SYSTEM_MALFUNCTION


class NetworkIssuer:
    """The bank over ISO 8583 (see the module docstring)."""

    def __init__(self, store: SqlStore, host: str, port: int, dialect: Dialect,
                 config: AcquirerConfig | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.config = config or AcquirerConfig()
        self.dialect = dialect
        self.clock = clock
        self.journal = Journal(store)
        self._stan = self.journal.stans_used()
        self.link = Link(host, port, dialect, self.config, self._next_key)
        self._down_until = 0.0
        self._saf_next: int | None = None  # the earliest due store-and-forward item
        self._answers: dict[str, RequestRow] = {}  # answered, not yet written (flush)
        self.stats: dict[str, int] = {"requests": 0, "stood_in": 0, "reversals": 0,
                                      "forwards": 0, "credits_used": 0, "replayed": 0}
        self._recover_sent()
        self._saf_next = min((s.due_us for s in self.journal.open_saf()), default=None)

    def __repr__(self) -> str:
        return f"NetworkIssuer({self.link.host}:{self.link.port})"

    def close(self) -> None:
        self.flush()
        self.link.close()

    def bank_captured(self) -> int:
        """What the bank said it captured (0200 approvals, reversals answered "21"): the
        other side of the reconciliation when the bank is over the wire."""
        self.flush()
        return self.journal.bank_captured()

    def summary(self) -> dict[str, object]:
        """The link's and the store-and-forward table's figures, for reports."""
        self.flush()
        saf = self.journal.all_saf()
        stood = [r for r in self.journal.requests() if r.state in ("stood_in", "unanswered")]
        credit, used = self.journal.credits_total()
        return {
            "link": dict(self.link.stats), "adapter": dict(self.stats),
            # The aggregates' charges stood in (first-ride risk taken at the bank's absence);
            # resubmissions of the same debts are requests, not more risk.
            "stood_in": {"requests": len(stood),
                         "charges": sum(1 for r in stood if r.request_id.startswith("chg:")),
                         "charges_fen": sum(r.amount for r in stood
                                            if r.request_id.startswith("chg:"))},
            "saf": {"open": sum(1 for x in saf if x.state == "open"),
                    "done": sum(1 for x in saf if x.state == "done"),
                    "codes": {c: sum(1 for x in saf if x.code == c)
                              for c in sorted({x.code for x in saf if x.code})}},
            "credits": {"captured_after_lost_answer": credit, "used": used},
            "bank_captured": self.journal.bank_captured(),
        }

    def _next_key(self) -> Key:
        self._stan += 1
        return Key.of(self.clock(), self._stan)

    def _now_us(self) -> int:
        return to_us(self.clock())

    # -- the gateway ----------------------------------------------------------------------

    def authorize(self, request: AuthorizationRequest, now: datetime) -> AuthResponse:
        """The bank's answer to ``request`` (or the recorded one, or a stand-in)."""
        rid = request.request_id
        row = self._answers.get(rid) or self.journal.request(rid)
        if row is not None and row.state != "sent":
            self.stats["replayed"] += 1
            return self._response(rid, row.code, row.mti, row)
        self.stats["requests"] += 1
        mti = mti_of(request)
        amount = request.amount
        if row is None and mti == FINANCIAL_MTI and request.kind in (
                AuthKind.PURCHASE, AuthKind.RESUBMISSION):  # fmt: skip
            credit = self.journal.credit(request.pan_token)
            if credit > 0:
                used = min(credit, amount)
                if used == amount:
                    local = RequestRow(rid, mti, None, {}, request.pan_token, 0, "local",
                                       APPROVED, self._now_us())
                    self.journal.use_credit(rid, request.pan_token, used, local)
                    self.stats["credits_used"] += 1
                    log.info("%s: %d fen answered from the card's credit at the bank "
                             "(a reversal found the original captured)", rid, used)
                    return self._response(rid, APPROVED, mti)
                amount -= used  # the bank is asked for the rest; the credit used on approval
        if not self._drain():  # the bank is unreachable, or its queue did not go through
            if row is None:
                return self._stand_in(request, None, mti, amount)
            return self._unanswered(request, row)
        new = row is None
        if row is None:
            key = self._next_key()
            fields = request_fields(self.dialect, request, key, self.config,
                                    amount=amount, original=self._original(request))
            row = RequestRow(rid, mti, key, fields, request.pan_token, amount, "sent", "",
                             self._now_us())
            self.journal.put_request(row)  # durable before sending
        assert row.key is not None
        answer = self._send(row.fields, rid, first=new)
        if answer is None:
            return self._unanswered(request, row)
        code = str(answer.get("39", ""))
        row.state, row.code = "answered", code
        if code == APPROVED and row.amount < request.amount:
            used = request.amount - row.amount
            self.journal.use_credit(rid, request.pan_token, used, row)
            self.stats["credits_used"] += 1
        else:
            # Kept until the core's commit (flush): a crash before it leaves the row "sent",
            # which a restart reverses, as the core then never booked the answer either.
            self._answers[rid] = row
        return self._response(rid, code, mti, row)

    def capture(self, hold_id: str, amount: int, capture_id: str, now: datetime) -> Capture:
        """A local confirmation: the bank captured with its 0200 approval."""
        row = self._approved(hold_id)
        return Capture(capture_id, hold_id, "", row.pan_token, str(row.fields.get("42", "")),
                       amount, "", now)

    def release(self, hold_id: str, now: datetime) -> Hold:
        """Give back a nominal hold: a 0400 naming the 0100 (store-and-forward if
        unanswered)."""
        row = self._approved(hold_id)
        assert row.key is not None
        self._queue_reversal(row, due_us=self._now_us())
        self._drain()
        return Hold(hold_id, "", row.pan_token, str(row.fields.get("42", "")), row.amount, "",
                    now, HoldStatus.RELEASED, now)

    def prune(self, floor: datetime) -> int:
        """Nothing to forget: the bank's records are the bank's (``tapsim issuer run``
        prunes its own, by ``--retention``); the adapter's rows live in its tables."""
        return 0

    # -- pieces -----------------------------------------------------------------------------

    def flush(self) -> None:
        """Make the answers received since the last flush durable (TransactionCore.run
        calls it before it commits the core's batch)."""
        if self._answers:
            self.journal.put_answers(list(self._answers.values()))
            self._answers.clear()

    def _approved(self, hold_id: str) -> RequestRow:
        rid = hold_id.removeprefix(HOLD_PREFIX)
        row = self._answers.get(rid) or self.journal.request(rid)
        if row is None or row.code != APPROVED or not hold_id.startswith(HOLD_PREFIX):
            raise HoldError(f"no hold {hold_id} approved by the bank")
        return row

    def _response(self, rid: str, code: str, mti: str,
                  row: RequestRow | None = None) -> AuthResponse:
        rc = _code(code)
        hold = None
        if rc.approved:
            if row is None and mti == AV_MTI:
                row = self._answers.get(rid) or self.journal.request(rid)
            if mti == FINANCIAL_MTI or (row is not None and row.amount > 0):
                hold = HOLD_PREFIX + rid
        return AuthResponse(rid, rc, frozenset(), hold)

    def _original(self, request: AuthorizationRequest) -> tuple[str, Key] | None:
        if not request.original_request_id:
            return None
        row = self.journal.request(request.original_request_id)
        if row is None or row.key is None:
            return None
        return row.mti, row.key

    def _reachable(self) -> bool:
        return time.monotonic() >= self._down_until

    def _down(self, reason: str) -> None:
        self._down_until = time.monotonic() + self.config.retry_after
        log.warning("bank unreachable (%s); stand-in for %g s", reason, self.config.retry_after)

    def _send(self, fields: Fields, what: str, *, first: bool) -> Fields | None:
        """Send, then repeat with the same key; the answer, or None (and the bank down)."""
        out = dict(fields)
        for attempt in range(self.config.attempts):
            if attempt or not first:
                out["t"] = repeat_mti(self.dialect, str(fields["t"]))
            try:
                return self.link.exchange(out, what)
            except LinkError as exc:
                log.warning("%s (%s, attempt %d of %d, request %s)", exc, exc.kind,
                            attempt + 1, self.config.attempts, what)
                last = exc
        self._down(f"{last.kind}: {last}")
        return None

    def _stand_in(self, request: AuthorizationRequest, row: RequestRow | None, mti: str,
                  amount: int) -> AuthResponse:
        """The bank not reached: decide for it, record what was decided."""
        code = stand_in(request, self.config.stand_in_limit).value
        rid = request.request_id
        self.stats["stood_in"] += 1
        if mti == AV_MTI:
            # The bank must learn of the verification the charge will name: forwarded later,
            # under a key given now.
            if row is None or row.key is None:
                key = self._next_key()
                fields = request_fields(self.dialect, request, key, self.config, amount=amount)
                row = RequestRow(rid, mti, key, fields, request.pan_token, amount, "stood_in",
                                 code, self._now_us())
            else:
                row.state, row.code = "unanswered", code
            assert row.key is not None
            sent = int(row.state == "unanswered")  # then the forward is a repeat (0101)
            saf = SafRow(self.journal.next_seq(), "forward", rid, row.key, row.fields, sent, 0,
                         "open", "", self._now_us())
            self.journal.put_request(row, self._queued(saf))
            self.stats["forwards"] += 1
        elif row is None:  # a 0200 never sent: nothing to reverse
            self.journal.put_request(RequestRow(rid, mti, None, {}, request.pan_token,
                                                amount, "stood_in", code, self._now_us()))
        else:  # sent, no answer: reversed from the store-and-forward table
            row.state, row.code = "unanswered", code
            self._queue_reversal(row, due_us=self._now_us(), put=True)
        log.warning("%s: stood in (bank unreachable), answered the core %s", rid, code)
        return self._response(rid, code, mti)

    def _unanswered(self, request: AuthorizationRequest, row: RequestRow) -> AuthResponse:
        return self._stand_in(request, row, row.mti, row.amount)

    def _queue_reversal(self, row: RequestRow, *, due_us: int, put: bool = False) -> None:
        assert row.key is not None
        key = self._next_key()
        fields = reversal_fields(self.dialect, row.mti, row.key, row.amount, key, self.config,
                                 advice=False)
        saf = SafRow(self.journal.next_seq(), "reversal", row.request_id, key, fields, 0, 0,
                     "open", "", due_us)
        if put:
            self.journal.put_request(row, self._queued(saf))
        else:
            self.journal.add_saf(self._queued(saf))
        self.stats["reversals"] += 1

    def _recover_sent(self) -> None:
        """Requests a crash left ``sent``: reversed (0200) or forwarded (0100)."""
        for row in self.journal.requests("sent"):
            if row.mti == AV_MTI:
                row.state, row.code = "unanswered", ResponseCode.APPROVED.value \
                    if self.config.stand_in_limit > 0 else ResponseCode.SYSTEM_MALFUNCTION.value
                assert row.key is not None
                saf = SafRow(self.journal.next_seq(), "forward", row.request_id, row.key,
                             row.fields, 1, 0, "open", "", self._now_us())
                self.journal.put_request(row, self._queued(saf))
            else:
                row.state, row.code = "unanswered", ResponseCode.ISSUER_UNAVAILABLE.value
                self._queue_reversal(row, due_us=self._now_us(), put=True)
            log.warning("%s: left unanswered by a restart; %s queued", row.request_id,
                        "a forward" if row.mti == AV_MTI else "a reversal")

    def drain(self) -> bool:
        """Send the due store-and-forward items now (True when none is left due)."""
        return self._drain()

    def _drain(self) -> bool:
        """Due store-and-forward items, in order; False when the bank did not answer."""
        if self._saf_next is None or self._saf_next > self._now_us():
            return self._reachable()
        if not self._reachable():
            return False
        now_us = self._now_us()
        for saf in self.journal.open_saf():
            if saf.due_us > now_us:
                continue
            fields = dict(saf.fields)
            base = str(fields["t"])
            if saf.kind == "reversal" and saf.attempts:  # unanswered once: advices from now
                base = REVERSAL_ADVICE_MTI
            fields["t"] = base if saf.attempts <= int(saf.kind == "reversal") else \
                repeat_mti(self.dialect, base)
            saf.attempts += 1
            self.journal.update_saf(saf)  # the attempt is counted before the message leaves
            answer = self._send(fields, f"{saf.kind} of {saf.request_id}", first=True)
            if answer is None:
                return False
            self._settle(saf, str(answer.get("39", "")))
        self._saf_next = min((s.due_us for s in self.journal.open_saf()), default=None)
        return True

    def _queued(self, saf: SafRow) -> SafRow:
        self._saf_next = saf.due_us if self._saf_next is None else min(self._saf_next,
                                                                        saf.due_us)
        return saf

    def _settle(self, saf: SafRow, code: str) -> None:
        saf.code = code
        credit = None
        if saf.kind == "forward":
            # The bank's answer stays in the SAF row; the request keeps the answer the core
            # got (the stand-in), so a retried batch decides as the first time.
            saf.state = "done"
            row = self.journal.request(saf.request_id)
            log.info("forwarded %s: the bank answered %s", saf.request_id, code)
            if code == APPROVED and row is not None and row.amount > 0:
                self.journal.update_saf(saf)
                self._queue_reversal(row, due_us=self._now_us())  # its hold: not used
                return
        elif code == NOT_FOUND and saf.not_found == 0 and self.config.late_grace > 0:
            saf.not_found = 1  # once more later, in case the original was still on its way
            saf.due_us = self._now_us() + int(self.config.late_grace * 1_000_000)
        else:
            saf.state = "done"
            row = self.journal.request(saf.request_id)
            if code == CAPTURED_NO_ACTION and row is not None and row.mti == FINANCIAL_MTI:
                credit = ("cr:" + saf.request_id, row.pan_token, row.amount)
                log.warning("reversal of %s answered 21: the bank captured %d fen; kept as "
                            "the card's credit for its debt's recovery", saf.request_id,
                            row.amount)
            else:
                log.info("reversal of %s answered %s", saf.request_id, code)
        self.journal.update_saf(saf, credit=credit)
