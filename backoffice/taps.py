"""The back office's tap record, and the one gate every record passes through.

Validators send tap records (later as ``wire`` messages; from CSV or JSON in replays).
:func:`parse_tap` turns a loose mapping into a :class:`TapRecord` or raises
:class:`MalformedTapError` naming the field and the reason; the caller keeps such a record
in the rejects table (scrubbed by :func:`scrub`) rather than dropping it.  A tap id holding
a run of 12 to 19 digits (a card number's length, the runs :func:`scrub` masks) is refused:
a tap id is stored and sent back to its validator as it is, so it must never be a PAN.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from emv.pan import mask_pan


class Action(StrEnum):
    """What the rider did at the validator."""

    TAP = "tap"  # single tap (flat fare, bus)
    TAP_ON = "tap_on"
    TAP_OFF = "tap_off"


@dataclass(frozen=True, slots=True)
class TapRecord:
    """One accepted tap as the back office keeps it (no clear PAN: token and mask only)."""

    tap_id: str
    validator_id: str
    operator_id: str
    pan_token: str
    masked_pan: str
    time: datetime
    stop_id: str
    route_id: str
    action: Action
    atc: int
    arqc: bytes
    ac_data: bytes
    scheme: str
    rider_category: str = ""
    fare_media: str = ""


class MalformedTapError(ValueError):
    """A tap record that cannot be accepted; ``field`` names where, the message says why."""

    def __init__(self, field: str, reason: str, tap_id: str | None = None) -> None:
        self.field = field
        self.reason = reason
        self.tap_id = tap_id
        where = f"tap {tap_id}: " if tap_id else ""
        super().__init__(f"{where}{field}: {reason}")


_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}")
_TOKEN = re.compile(r"[0-9a-f]{32}")
_MASK = re.compile(r"\d{6}\*{2,9}\d{4}")
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})+")
_SCHEME = re.compile(r"[a-z0-9_]{1,16}")
_LABEL = re.compile(r"[A-Za-z0-9_.-]{0,32}")
_DIGIT_RUN = re.compile(r"(?<!\d)\d{12,19}(?!\d)")
_CLEAR_PAN_FIELDS = ("pan", "PAN", "track2", "57", "5A")
MAX_AC_DATA = 255

REQUIRED = (
    "tap_id", "validator_id", "operator_id", "pan_token", "masked_pan", "time",
    "stop_id", "route_id", "action", "atc", "arqc", "ac_data", "scheme",
)  # fmt: skip


def _text(raw: Mapping[str, object], name: str, tap_id: str | None) -> str:
    value = raw.get(name)
    if value is None or value == "":
        raise MalformedTapError(name, "missing", tap_id)
    if not isinstance(value, str):
        raise MalformedTapError(name, f"must be text, got {type(value).__name__}", tap_id)
    return value.strip()


def _ident(raw: Mapping[str, object], name: str, tap_id: str | None) -> str:
    value = _text(raw, name, tap_id)
    if not _ID.fullmatch(value):
        raise MalformedTapError(name, "must be 1-64 of A-Z a-z 0-9 . _ : / -", tap_id)
    return value


def _hex(raw: Mapping[str, object], name: str, tap_id: str | None) -> bytes:
    value = raw.get(name)
    if isinstance(value, bytes):
        return value
    text = _text(raw, name, tap_id)
    if not _HEX.fullmatch(text):
        raise MalformedTapError(name, "must be hexadecimal, whole bytes", tap_id)
    return bytes.fromhex(text)


def _time(raw: Mapping[str, object], tap_id: str | None) -> datetime:
    value = raw.get("time")
    if isinstance(value, datetime):
        t = value
    else:
        text = _text(raw, "time", tap_id)
        try:
            t = datetime.fromisoformat(text)
        except ValueError:
            raise MalformedTapError("time", "not an ISO 8601 time", tap_id) from None
    if t.tzinfo is None or t.utcoffset() is None:
        raise MalformedTapError("time", "has no UTC offset (times must be timezone-aware)", tap_id)
    return t


def _atc(raw: Mapping[str, object], tap_id: str | None) -> int:
    value = raw.get("atc")
    if isinstance(value, bool):
        raise MalformedTapError("atc", "must be an integer", tap_id)
    if isinstance(value, int):
        atc = value
    else:
        text = _text(raw, "atc", tap_id)
        if not text.isdigit():
            raise MalformedTapError("atc", "must be a decimal integer", tap_id)
        atc = int(text)
    if not 0 <= atc <= 0xFFFF:
        raise MalformedTapError("atc", f"must be 0..65535, got {atc}", tap_id)
    return atc


def parse_tap(raw: Mapping[str, object] | TapRecord) -> TapRecord:
    """A :class:`TapRecord` from a loose mapping (CSV row, JSON object, decoded message)."""
    if isinstance(raw, TapRecord):
        return raw
    if not isinstance(raw, Mapping):
        raise MalformedTapError("record", f"must be a mapping, got {type(raw).__name__}")
    tap_id: str | None = None
    tap_id = _ident(raw, "tap_id", None)
    if pan_like(tap_id):  # refused, and the id left out of the reject (its raw is scrubbed)
        raise MalformedTapError("tap_id", PAN_LIKE_ID, None)
    for name in _CLEAR_PAN_FIELDS:
        if raw.get(name) not in (None, ""):
            raise MalformedTapError(
                name, "clear card data must never be sent (send the token)", tap_id
            )
    token = _text(raw, "pan_token", tap_id)
    if not _TOKEN.fullmatch(token):
        raise MalformedTapError("pan_token", "must be 32 lowercase hex digits", tap_id)
    masked = _text(raw, "masked_pan", tap_id)
    if not _MASK.fullmatch(masked):
        raise MalformedTapError(
            "masked_pan", "must show at most the first 6 and last 4 digits", tap_id
        )
    action_text = _text(raw, "action", tap_id)
    try:
        action = Action(action_text)
    except ValueError:
        known = ", ".join(a.value for a in Action)
        raise MalformedTapError("action", f"must be one of {known}", tap_id) from None
    arqc = _hex(raw, "arqc", tap_id)
    if len(arqc) != 8:
        raise MalformedTapError("arqc", f"must be 8 bytes, got {len(arqc)}", tap_id)
    ac_data = _hex(raw, "ac_data", tap_id)
    if not 1 <= len(ac_data) <= MAX_AC_DATA:
        raise MalformedTapError("ac_data", f"must be 1..{MAX_AC_DATA} bytes", tap_id)
    scheme = _text(raw, "scheme", tap_id)
    if not _SCHEME.fullmatch(scheme):
        raise MalformedTapError("scheme", "must be a scheme name like 'tdes' or 'sm4'", tap_id)
    labels = {}
    for name in ("rider_category", "fare_media"):
        value = raw.get(name) or ""
        if not isinstance(value, str) or not _LABEL.fullmatch(value):
            raise MalformedTapError(name, "must be up to 32 of A-Z a-z 0-9 _ . -", tap_id)
        labels[name] = value
    return TapRecord(
        tap_id=tap_id,
        validator_id=_ident(raw, "validator_id", tap_id),
        operator_id=_ident(raw, "operator_id", tap_id),
        pan_token=token,
        masked_pan=masked,
        time=_time(raw, tap_id),
        stop_id=_ident(raw, "stop_id", tap_id),
        route_id=_ident(raw, "route_id", tap_id),
        action=action,
        atc=_atc(raw, tap_id),
        arqc=arqc,
        ac_data=ac_data,
        scheme=scheme,
        rider_category=labels["rider_category"],
        fare_media=labels["fare_media"],
    )


def tap_to_mapping(tap: TapRecord) -> dict[str, str]:
    """The text form of a tap (CSV/JSON), which :func:`parse_tap` reads back."""
    return {
        "tap_id": tap.tap_id,
        "validator_id": tap.validator_id,
        "operator_id": tap.operator_id,
        "pan_token": tap.pan_token,
        "masked_pan": tap.masked_pan,
        "time": tap.time.isoformat(),
        "stop_id": tap.stop_id,
        "route_id": tap.route_id,
        "action": tap.action.value,
        "atc": str(tap.atc),
        "arqc": tap.arqc.hex(),
        "ac_data": tap.ac_data.hex(),
        "scheme": tap.scheme,
        "rider_category": tap.rider_category,
        "fare_media": tap.fare_media,
    }


def _mask_run(match: re.Match[str]) -> str:
    return mask_pan(match.group(0))


PAN_LIKE_ID = ("holds a run of 12 to 19 digits, which may be a card number (never stored in "
               "clear): split long numbers in tap ids with a separator")


def pan_like(text: str) -> bool:
    """Whether ``text`` holds a run of 12 to 19 digits: what :func:`scrub` masks as a PAN."""
    return _DIGIT_RUN.search(text) is not None


def scrub_id(text: str | None) -> str | None:
    """An identifier (a tap id) with any PAN-like digit run masked, as :func:`scrub` masks
    them in a record: what a rejected record's tap id is kept and reported as."""
    return None if text is None else _DIGIT_RUN.sub(_mask_run, text)


def scrub(raw: object) -> str:
    """JSON text of a rejected record with anything that looks like a PAN masked."""
    try:
        text = json.dumps(raw, default=str, sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError):
        text = json.dumps(repr(raw), ensure_ascii=False)
    return _DIGIT_RUN.sub(_mask_run, text)
