"""What the dialect's fields mean: keys for matching, field 55 (ICC data), field 90.

The pieces both ends share, so the host and any acquirer (the load generator today, the
back office's adapter next) read a message the same way:

* :func:`request_key` / :func:`request_id`: a request is known by (acquiring institution
  32, transmission date-time 7, STAN 11), the triple an ISO 8583 host matches repeats and
  reversals on, and exactly what field 90 of a reversal names again.
* :func:`icc_data` / :func:`read_icc`: field 55 as BER-TLV (``emv.tlv``): the cryptogram
  (9F26, 9F27), the ATC (9F36), the IAD (9F10, carrying the CVR), the AIP (82), the TVR
  (95) and the other terminal data the cryptogram covers; the host rebuilds the exact AC
  input from them (``emv.appdata.ac_input``).
* :func:`original_data` / :func:`read_original`: field 90, n42: original MTI (4), STAN
  (6), transmission date-time (10), acquiring institution (11), forwarding institution
  (11, zeros here).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

from emv import tlv
from emv.appdata import (
    AC_TERMINAL_DATA,
    AppDataError,
    IssuerApplicationData,
    ac_input,
    ac_terminal_data,
)
from isolink.dialect import Dialect, Fields, MessageFormatError, MessageRule

# Field 55's tags, in the order they are sent (terminal data as emv.appdata lists it).
ICC_TAGS: tuple[int, ...] = (
    0x9F26, 0x9F27, 0x9F10, 0x9F36, 0x82, *(t for t, _ in AC_TERMINAL_DATA),
)


@dataclass(frozen=True)
class IccData:
    """The cryptogram data a request carries; ``ac_data`` is what the card MACed."""

    atc: int | None
    arqc: bytes | None
    ac_data: bytes | None


def transmission_time(at: datetime) -> str:
    """Field 7: MMDDhhmmss in UTC."""
    return at.astimezone(UTC).strftime("%m%d%H%M%S")


def acquirer(value: str) -> str:
    """An acquiring institution code as field 90 writes it: 11 digits, zero-filled."""
    return value.rjust(11, "0")


def request_key(fields: Fields) -> tuple[str, str, str]:
    """(acquirer, transmission time, STAN) of a message."""
    return acquirer(str(fields.get("32", ""))), str(fields["7"]), str(fields["11"])


def request_id(key: tuple[str, str, str]) -> str:
    """The issuer's request id for a key: ``iso:<acquirer>:<time>:<stan>``."""
    return "iso:" + ":".join(key)


def approval_code(request: str) -> str:
    """Field 38 of an approval: six characters derived from the request id, so the answer
    to a repeat is the same bytes (even after a restart)."""
    return hashlib.sha256(request.encode()).hexdigest()[:6].upper()


def original_data(mti: str, key: tuple[str, str, str]) -> str:
    """Field 90 naming the request ``key`` of type ``mti``."""
    acq, time, stan = key
    return f"{mti}{stan}{time}{acquirer(acq)}{'0' * 11}"


def read_original(value: str) -> tuple[str, tuple[str, str, str]]:
    """(original MTI, original key) from field 90."""
    return value[:4], (value[20:31], value[10:20], value[4:10])


def icc_data(values: dict[int, bytes]) -> str:
    """Field 55 from tag values (the tags of :data:`ICC_TAGS` that are present, in order),
    as pyiso8583 holds a binary field: upper-case hex."""
    return tlv.encode([(t, values[t]) for t in ICC_TAGS if t in values]).hex().upper()


def read_icc(field: str | None) -> IccData:
    """The cryptogram data of field 55; malformed TLV or IAD is a format error, missing
    tags are not (the issuer answers those with its own code, "12")."""
    if not field:
        return IccData(None, None, None)
    try:
        raw = bytes.fromhex(field)
    except ValueError:
        raise MessageFormatError("ICC data is not hex", field="55") from None
    try:
        values = tlv.flatten(tlv.decode(raw))
    except tlv.TlvError as exc:
        raise MessageFormatError(f"ICC data is not BER-TLV: {exc}", field="55") from None
    atc_raw = values.get(0x9F36)
    atc = int.from_bytes(atc_raw, "big") if atc_raw is not None and len(atc_raw) == 2 else None
    arqc = values.get(0x9F26)
    ac_data = None
    iad, aip = values.get(0x9F10), values.get(0x82)
    if atc is not None and iad is not None and aip is not None:
        try:
            cvr = IssuerApplicationData.parse(iad).cvr
            ac_data = ac_input(ac_terminal_data(values), aip, atc, cvr)
        except AppDataError as exc:
            raise MessageFormatError(f"ICC data: {exc}", field="55") from None
    return IccData(atc, arqc, ac_data)


def answer(dialect: Dialect, rule: MessageRule, request: Fields, code: str,
           **extra: str) -> Fields:
    """The answer to ``request``: its echoed fields, the response code, ``extra`` fields."""
    out: Fields = {"t": rule.answer}
    for f in rule.echo:
        if f in request:
            out[f] = request[f]
    out["39"] = code
    out.update({k.lstrip("f"): v for k, v in extra.items()})
    return out


def format_error_answer(dialect: Dialect, exc: MessageFormatError) -> Fields | None:
    """The "30" answer to a malformed request, when its MTI names a request of the dialect
    and its STAN was read; None when it cannot be answered (then it is dropped)."""
    rule = dialect.rule(exc.mti or "")
    if rule is None or exc.stan is None:
        return None
    out: Fields = {"t": rule.answer, "11": exc.stan, "39": "30"}
    partial = exc.partial
    for f in ("7", "32", "37"):  # what matching needs, where it was read and is well formed
        value = partial.get(f)
        if isinstance(value, str) and f != exc.field and _fits(dialect, f, value):
            out[f] = value
    return out


def _fits(dialect: Dialect, field: str, value: str) -> bool:
    try:
        dialect.encode({"t": "0810", "11": "000000", field: value})
    except MessageFormatError:
        return False
    return True
