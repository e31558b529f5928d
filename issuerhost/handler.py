"""One decoded request in, its answer out: the issuer's decisions behind the dialect.

:class:`IssuerHandler` works on the issuer in memory (``issuer.service.Issuer``) and never
touches storage or sockets: the host (``issuerhost.host``) gives it a batch, writes the
issuer's change set in one transaction, and only then sends the answers, so nothing is
answered that a restart would forget.

What each request does, in order of the checks:

* 0100 authorization: ``Issuer.authorize`` (kind from field 25); an approval's hold stays.
* 0200 financial request: ``Issuer.authorize``, and on approval ``Issuer.capture`` of the
  whole amount (capture id ``cap:`` + request id): single message, the money moves now.
* 0400/0420 reversal (field 90 names the original): original unknown -> "25"; original
  declined or without hold -> "00" (nothing to give back); hold active -> released, "00";
  hold released already (a repeat, or a second reversal) -> "00"; hold captured -> "21"
  (no action taken: the issuer has no refund yet).
* 0800 network management (field 70: sign-on, sign-off, echo) -> "00".

Idempotency: the issuer's request id is derived from the request's key
(``isolink.messages.request_id``), and ``Issuer.authorize`` answers a request id it has
seen with its first answer; the answer's other fields are echoes and a field 38 derived
from the request id, so a repeat gets the same bytes, before or after a restart.

Retention: the host prunes records older than its floor from memory (``--retention``,
issuerhost/README.md).  A reversal whose original (or its hold) is not in memory, and a
request not in memory whose field 7 is older than the floor (a day of slack), are looked up
in the database first (``recall``, injected by the host: one indexed read, only for such
late messages), so a late repeat or reversal is answered as the first time, at any age.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from isolink.dialect import Dialect, Fields, MessageFormatError, MessageRule
from isolink.messages import (
    answer,
    approval_code,
    read_icc,
    read_original,
    request_id,
    request_key,
)
from issuer.errors import IssuerError
from issuer.models import AuthKind, AuthorizationRequest, HoldStatus
from issuer.service import Issuer
from issuer.store import IssuerSnapshot

APPROVED = "00"
NO_ACTION_TAKEN = "21"
ORIGINAL_NOT_FOUND = "25"
FORMAT_ERROR = "30"
SYSTEM_MALFUNCTION = "96"
# A request whose key (field 7) is older than the prune floor plus this is looked up in the
# database before it is answered as new: room for the acquirer's clock to differ.
CLOCK_SLACK = timedelta(days=1)


def sent_at(field7: str, now: datetime) -> datetime | None:
    """Field 7 (MMDDhhmmss, UTC, no year) as the latest such time not after ``now`` + a
    day; None when it is not a date."""
    try:
        at = now.replace(month=int(field7[0:2]), day=int(field7[2:4]), hour=int(field7[4:6]),
                         minute=int(field7[6:8]), second=int(field7[8:10]), microsecond=0)
        if at > now + CLOCK_SLACK:
            at = at.replace(year=at.year - 1)
    except ValueError:
        return None
    return at


class IssuerHandler:
    """Answers decoded requests with one issuer (see the module docstring)."""

    def __init__(self, issuer: Issuer, dialect: Dialect, clock: Callable[[], datetime], *,
                 recall: Callable[[str], IssuerSnapshot] | None = None) -> None:
        self.issuer = issuer
        self.dialect = dialect
        self.clock = clock
        # Records older than ``floor`` may be pruned from memory (the host's --retention);
        # ``recall`` reads one back from the database for a late message that names one.
        self.floor: datetime | None = None
        self.recall = recall

    def _recall(self, rid: str) -> None:
        if self.recall is not None:
            self.issuer.readmit(self.recall(rid))

    def handle(self, fields: Fields) -> Fields:
        """The answer to one decoded message; MessageFormatError for a request the dialect
        does not allow (the caller answers "30" or drops it)."""
        rule = self.dialect.check_required(fields)
        base = rule.mti
        if base == "0800":
            return self._network(rule, fields)
        if base in ("0400", "0420"):
            return self._reversal(rule, fields)
        return self._financial(rule, fields, capture=base == "0200")

    # -- the message kinds ----------------------------------------------------------------

    def _network(self, rule: MessageRule, fields: Fields) -> Fields:
        if fields["70"] not in self.dialect.network_codes:
            raise MessageFormatError(f"network management code {fields['70']!r} unknown",
                                     field="70", mti=fields["t"], stan=fields["11"],
                                     partial=fields)
        return answer(self.dialect, rule, fields, APPROVED)

    def _financial(self, rule: MessageRule, fields: Fields, *, capture: bool) -> Fields:
        kind_name = self.dialect.pos_codes.get(fields["25"])
        if kind_name is None:
            raise MessageFormatError(f"POS condition code {fields['25']!r} unknown",
                                     field="25", mti=fields["t"], stan=fields["11"],
                                     partial=fields)
        try:
            icc = read_icc(fields.get("55"))
        except MessageFormatError as exc:
            exc.mti, exc.stan, exc.partial = fields["t"], fields["11"], fields
            raise
        rid = request_id(request_key(fields))
        original = None
        if "90" in fields:
            original = request_id(read_original(fields["90"])[1])
        request = AuthorizationRequest(
            request_id=rid,
            pan_token=fields["48"],
            kind=AuthKind(kind_name),
            amount=int(fields["4"]),
            currency=self.dialect.currencies.get(fields["49"], fields["49"]),
            merchant_id=fields["42"].rstrip(),
            atc=icc.atc,
            arqc=icc.arqc,
            ac_data=icc.ac_data,
            original_request_id=original,
        )
        now = self.clock()
        if self.floor is not None and rid not in self.issuer.auths:
            sent = sent_at(str(fields["7"]), now)
            if sent is None or sent < self.floor + CLOCK_SLACK:  # a late repeat, perhaps
                self._recall(rid)
        try:
            resp = self.issuer.authorize(request, now)
            if capture and resp.approved and resp.hold_id is not None:
                self.issuer.capture(resp.hold_id, request.amount, "cap:" + rid, now)
        except IssuerError:
            return answer(self.dialect, rule, fields, SYSTEM_MALFUNCTION)
        if resp.approved:
            return answer(self.dialect, rule, fields, resp.code.value, f38=approval_code(rid))
        return answer(self.dialect, rule, fields, resp.code.value)

    def _reversal(self, rule: MessageRule, fields: Fields) -> Fields:
        _, key = read_original(fields["90"])
        rid = request_id(key)
        record = self.issuer.auths.get(rid)
        if self.floor is not None and (record is None or (
                record.hold_id is not None and record.hold_id not in self.issuer.holds)):
            # Pruned from memory, perhaps (a reversal from store-and-forward days late):
            # the database answers, so a captured original is "21", never "25".
            self._recall(rid)
            record = self.issuer.auths.get(rid)
        if record is None:
            return answer(self.dialect, rule, fields, ORIGINAL_NOT_FOUND)
        if not record.code.approved or record.hold_id is None:
            return answer(self.dialect, rule, fields, APPROVED)
        hold = self.issuer.holds.get(record.hold_id)
        if hold is None or hold.status is HoldStatus.RELEASED:
            return answer(self.dialect, rule, fields, APPROVED)
        if hold.status is HoldStatus.CAPTURED:
            return answer(self.dialect, rule, fields, NO_ACTION_TAKEN)
        try:
            self.issuer.release(hold.hold_id, self.clock())
        except IssuerError:
            return answer(self.dialect, rule, fields, SYSTEM_MALFUNCTION)
        return answer(self.dialect, rule, fields, APPROVED)
