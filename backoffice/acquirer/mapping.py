"""What the core asks of the bank, as isolink messages, and the answers back (no I/O).

The core speaks :class:`issuer.models.AuthorizationRequest`; the bank speaks the dialect of
``isolink``.  This module maps one to the other, for :mod:`backoffice.acquirer.gateway`:

* account verification (``av:``) -> 0100, POS 51, the nominal amount (0: no hold);
* the aggregate's charge (``chg:``, deferred or resubmission), debt recovery by tap
  (``rec:``, purchase) and by schedule (``rs:``, resubmission) -> 0200: the bank
  authorizes and captures at once, so the core's capture after it is a local confirmation;
* the release of a nominal hold, and the reversal of a 0200 whose answer did not come ->
  0400 (then 0420 advice from the store-and-forward table).

Field 55 comes from the request's ``ac_data`` (the AC input in one piece, emv.appdata):
the terminal data, AIP, ATC and CVR are cut back out of it.  The IAD's other bytes (DKI,
CVN, algorithm) are not in the tap record; the IAD is rebuilt as ``07 01 00 CVR 00``
(tapsim's layout, DKI 1, CVN and algorithm 0 = "see the card record"): the issuer reads
only the CVR from it and takes the card's algorithm and key from its own records.  The
CID is ``80`` (an ARQC: transit taps always go online later).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from emv.appdata import AC_TERMINAL_DATA, IssuerApplicationData
from isolink.dialect import Dialect, Fields
from isolink.messages import icc_data, original_data, transmission_time
from issuer.models import AuthKind, AuthorizationRequest

AV_MTI = "0100"
FINANCIAL_MTI = "0200"
REVERSAL_MTI = "0400"
REVERSAL_ADVICE_MTI = "0420"
NETWORK_MTI = "0800"
SIGN_ON, ECHO = "001", "301"
CID_ARQC = b"\x80"
_TERMINAL_BYTES = sum(n for _, n in AC_TERMINAL_DATA)
AC_DATA_BYTES = _TERMINAL_BYTES + 2 + 2 + 4  # terminal data, AIP, ATC, CVR


class MappingError(ValueError):
    """A request the link cannot carry (names the request id and what is wrong)."""


@dataclass(frozen=True, slots=True)
class Key:
    """What the bank knows a request by, besides the acquirer: field 7 and field 11."""

    time: str  # MMDDhhmmss, UTC
    stan: str  # six digits

    @classmethod
    def of(cls, at: datetime, stan: int) -> Key:
        return cls(transmission_time(at), f"{stan % 1_000_000:06d}")


@dataclass(frozen=True, slots=True)
class AcquirerConfig:
    """The acquirer's side of the link: who it is, how long it waits, what it stands in for.

    ``timeout``: seconds for one answer; ``attempts``: sends of one request (the first and
    its repeats, same key) before its answer counts as not come; ``retry_after``: seconds
    before a bank found unreachable is tried again (meanwhile the core gets stand-in
    answers at once); ``echo_after``: idle seconds after which an echo test (0800/301)
    goes before the next request; ``stand_in_limit``: fen the operator accepts at its own
    risk when the bank cannot be reached (0: none, every such request is declined and
    the card deny-listed); ``late_grace``: seconds after a "25" (original unknown) before
    the reversal is sent once more, in case the original was still on its way.
    """

    acquirer_id: str = "10000000001"
    terminal_id: str = "TAPSIMBO"
    timeout: float = 5.0
    attempts: int = 2
    retry_after: float = 5.0
    echo_after: float = 30.0
    stand_in_limit: int = 0
    late_grace: float = 10.0

    def __post_init__(self) -> None:
        if not (self.acquirer_id.isdigit() and len(self.acquirer_id) <= 11):
            raise MappingError(f"acquirer id {self.acquirer_id!r}: up to 11 digits")
        if not 0 < self.timeout <= 600:
            raise MappingError(f"timeout {self.timeout}: between 0 and 600 seconds")
        if not 1 <= self.attempts <= 10:
            raise MappingError(f"attempts {self.attempts}: 1 to 10")
        if self.stand_in_limit < 0 or self.stand_in_limit >= 10**12:
            raise MappingError(f"stand-in limit {self.stand_in_limit}: 0 to 10^12 - 1 fen")
        if self.retry_after < 0 or self.echo_after <= 0 or self.late_grace < 0:
            raise MappingError("retry_after, late_grace >= 0 and echo_after > 0 seconds")


def mti_of(request: AuthorizationRequest) -> str:
    """0100 for an account verification, 0200 for everything that moves money."""
    return AV_MTI if request.kind is AuthKind.ACCOUNT_VERIFICATION else FINANCIAL_MTI


def repeat_mti(dialect: Dialect, mti: str) -> str:
    """The dialect's repeat of ``mti`` (0101 for 0100 ...), or ``mti`` when it has none."""
    for rep, base in dialect.repeats.items():
        if base == mti:
            return rep
    return mti


def icc_values(request: AuthorizationRequest) -> dict[int, bytes] | None:
    """Field 55's tag values from the request's cryptogram data; None when it has none."""
    data, arqc, atc = request.ac_data, request.arqc, request.atc
    if data is None or arqc is None or atc is None:
        return None
    if len(data) != AC_DATA_BYTES:
        raise MappingError(f"{request.request_id}: AC input of {len(data)} bytes, "
                           f"expected {AC_DATA_BYTES} (emv.appdata layout)")
    values: dict[int, bytes] = {}
    pos = 0
    for tag, length in AC_TERMINAL_DATA:
        values[tag] = data[pos:pos + length]
        pos += length
    aip, atc_bytes, cvr = data[pos:pos + 2], data[pos + 2:pos + 4], data[pos + 4:pos + 8]
    if int.from_bytes(atc_bytes, "big") != atc:
        raise MappingError(f"{request.request_id}: ATC {atc} differs from the AC input's")
    values[0x9F26] = arqc
    values[0x9F27] = CID_ARQC
    values[0x9F10] = IssuerApplicationData(dki=1, cvn=0, cvr=cvr, algorithm=0).to_bytes()
    values[0x9F36] = atc_bytes
    values[0x82] = aip
    return values


def _base(dialect: Dialect, mti: str, key: Key, cfg: AcquirerConfig) -> Fields:
    return {"t": mti, "7": key.time, "11": key.stan, "32": cfg.acquirer_id,
            "37": f"{key.time[4:]}{key.stan}"}  # fmt: skip


def request_fields(dialect: Dialect, request: AuthorizationRequest, key: Key,
                   cfg: AcquirerConfig, *, amount: int | None = None,
                   original: tuple[str, Key] | None = None) -> Fields:
    """The 0100 or 0200 for ``request`` under ``key`` (``amount`` when the bank is to be
    asked for less than the core's amount; ``original``: field 90's MTI and key)."""
    fields = _base(dialect, mti_of(request), key, cfg)
    value = request.amount if amount is None else amount
    if not 0 <= value < 10**12:
        raise MappingError(f"{request.request_id}: amount {value} does not fit field 4")
    fields.update({
        "3": "000000", "4": f"{value:012d}", "25": dialect.kind_code(request.kind.value),
        "41": cfg.terminal_id, "42": request.merchant_id[:15].ljust(15),
        "48": request.pan_token, "49": dialect.currency_code(request.currency),
    })  # fmt: skip
    icc = icc_values(request)
    if icc is not None:
        fields["55"] = icc_data(icc)
    if original is not None:
        fields["90"] = original_data(original[0], (cfg.acquirer_id, original[1].time,
                                                   original[1].stan))
    return fields


def reversal_fields(dialect: Dialect, original_mti: str, original: Key, amount: int, key: Key,
                    cfg: AcquirerConfig, *, advice: bool) -> Fields:
    """A 0400 (or 0420 advice) under its own ``key``, naming the original in field 90."""
    fields = _base(dialect, REVERSAL_ADVICE_MTI if advice else REVERSAL_MTI, key, cfg)
    fields["4"] = f"{amount:012d}"
    fields["41"] = cfg.terminal_id
    fields["90"] = original_data(original_mti, (cfg.acquirer_id, original.time, original.stan))
    return fields


def network_fields(code: str, key: Key, cfg: AcquirerConfig) -> Fields:
    """0800: sign-on (001) or echo test (301)."""
    return {"t": NETWORK_MTI, "7": key.time, "11": key.stan, "32": cfg.acquirer_id, "70": code}


def answers(dialect: Dialect, sent: Fields, got: Fields) -> bool:
    """Whether ``got`` is the answer to ``sent`` (its answer MTI, same field 7 and STAN)."""
    base = dialect.repeats.get(str(sent["t"]), str(sent["t"]))
    rule = dialect.rule(base)
    return (rule is not None and got.get("t") == rule.answer
            and got.get("11") == sent["11"] and got.get("7", sent["7"]) == sent["7"])
