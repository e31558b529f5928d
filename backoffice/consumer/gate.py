"""From an MQTT message to what the core takes: a tap record, a skip, or a dead letter.

Pure functions (no broker, no database), so every rule of the consumer's gate is a one-line
test.  :func:`read_tap` decodes a payload strictly (:mod:`wire.codec`: size first, then the
schema), checks it came on its own validator's topic, and maps the wire record onto the
core's :class:`~backoffice.taps.TapRecord` (``pan_masked`` -> ``masked_pan``, ``cryptogram``
-> ``arqc``; ``ac_data`` is already exactly what the card MACed, which the issuer
verifies).  Only **accepted QuickPass** taps are charged by the core: a tap the validator
refused is not a ride.  An accepted e-purse tap was paid on the card during the tap: it is
not charged but kept (:class:`EpurseTap`, :func:`epurse_row`, table ``epurse_taps``) for
clearing, which verifies its TAC with the card issuer's key (``clearing/``).

:func:`dead_letter` is the back office's dead-letter message: JSON naming the reason,
the detail and the topic, with the payload (when small) in base64 after masking anything
that looks like a card number, so the dead-letter topic never carries a clear PAN.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

import msgspec

from backoffice.records import EpurseTapRow
from backoffice.taps import PAN_LIKE_ID, Action, TapRecord, pan_like, scrub_id
from fare.clock import epoch_us
from wire import topics
from wire.codec import decode
from wire.errors import Reason, WireError
from wire.messages import Method, TapOutcome
from wire.messages import TapRecord as WireTap

# GTFS fare_media_type by payment method: 3 = contactless EMV (cEMV), 2 = transit card.
MEDIA_TYPE_OF_METHOD: Mapping[Method, int] = {Method.EMV: 3, Method.EPURSE: 2}
DEAD_LETTER_PAYLOAD_MAX = 4 * 1024  # payloads up to a tap record's limit travel along


@dataclass(frozen=True, slots=True)
class Refused:
    """A payload the back office will not take: it goes to the dead-letter topic."""

    reason: str  # a wire.Reason value, or "rejected" (by the core) / "core-error"
    detail: str
    tap_id: str | None = None


@dataclass(frozen=True, slots=True)
class Skipped:
    """A well-formed tap record the core does not charge (counted, acknowledged)."""

    why: str  # "deny_listed", "duplicate", "declined" (the validator's word) or "epurse"
    tap_id: str


@dataclass(frozen=True, slots=True)
class EpurseTap:
    """An accepted e-purse tap: kept for clearing (deduplicated by tap id), not charged."""

    record: WireTap

    @property
    def tap_id(self) -> str:
        return self.record.tap_id


Inbound = TapRecord | Refused | Skipped | EpurseTap


def epurse_row(t: WireTap, received_us: int) -> EpurseTapRow:
    """The kept row of an accepted e-purse tap.  The clearing day is the purchase's local
    date as the card recorded it (the TAC's date digits), or the tap time's UTC date for
    records that predate those digits."""
    # An accepted epurse record carries these (the wire decoder refuses it otherwise).
    assert t.epurse_serial is not None and t.tac is not None and t.psam_id is not None
    assert t.psam_serial is not None
    assert t.epurse_balance_before is not None and t.epurse_balance_after is not None
    when = t.epurse_when
    day = (f"{when[0:4]}-{when[4:6]}-{when[6:8]}" if when
           else t.time.astimezone(dt.UTC).date().isoformat())
    return EpurseTapRow(
        tap_id=t.tap_id, issuer_id=t.epurse_issuer, card_number=t.epurse_card,
        card_serial=t.epurse_serial, amount=t.epurse_balance_before - t.epurse_balance_after,
        balance_before=t.epurse_balance_before, balance_after=t.epurse_balance_after,
        tac=t.tac.hex().upper(), psam_id=t.psam_id, psam_serial=t.psam_serial,
        key_version=t.epurse_key_version, algorithm_id=t.epurse_algorithm, tac_time=when,
        day=day, time_us=epoch_us(t.time), operator_id=t.operator_id,
        validator_id=t.validator_id, received_us=received_us)


class FareMediaLabels:
    """Maps a validator's fare-media label onto the fare feed's ids.

    Validators label media by application (``unionpay-quickpass``, ``tunion-epurse``); a
    feed names its own (``cemv``, ``tunion``).  A label the feed knows is kept; otherwise the
    feed's one medium of the method's GTFS type (3 cEMV, 2 transit card) stands in; otherwise
    the medium is "not given" (the feed's prices for any medium), never a refused tap.
    """

    def __init__(self, known: Mapping[str, int]) -> None:
        """``known``: the feed's fare_media_id -> fare_media_type."""
        self.known = dict(known)
        self.by_method: dict[Method, str] = {}
        for method, media_type in MEDIA_TYPE_OF_METHOD.items():
            ids = [m for m, t in self.known.items() if t == media_type]
            if len(ids) == 1:
                self.by_method[method] = ids[0]

    def __call__(self, label: str, method: Method) -> str:
        if label in self.known:
            return label
        return self.by_method.get(method, "")


def read_tap(topic: str, payload: bytes, media: FareMediaLabels, tz: dt.tzinfo) -> Inbound:
    """What one message on a tap topic is to the core (never raises on what arrives)."""
    try:
        validator = topics.validator_of(topic)
        wire_tap = decode(payload, WireTap)
    except WireError as exc:
        return Refused(exc.reason.value, exc.detail)
    except ValueError as exc:  # defence in depth: anything the codec failed to classify
        return Refused(Reason.MALFORMED.value, f"not a tap record: {type(exc).__name__}")
    if wire_tap.validator_id != validator:
        return Refused(Reason.WRONG_TOPIC.value,
                       f"a record of validator {wire_tap.validator_id!r} on {topic!r}",
                       wire_tap.tap_id)
    if pan_like(wire_tap.tap_id):  # parse_tap's rule: never kept or sent on in clear
        return Refused(Reason.MALFORMED.value, f"tap_id: {PAN_LIKE_ID}", scrub_id(wire_tap.tap_id))
    return to_core(wire_tap, media, tz)


def to_core(t: WireTap, media: FareMediaLabels,
            tz: dt.tzinfo) -> TapRecord | Skipped | EpurseTap:
    """The core's record of an accepted QuickPass tap; an accepted e-purse tap to keep for
    clearing; a skip for anything else."""
    if t.outcome is not TapOutcome.ACCEPTED:
        return Skipped(t.outcome.value, t.tap_id)
    if t.method is not Method.EMV:
        return EpurseTap(t)
    # An accepted emv record carries these (the wire decoder refuses it otherwise).
    assert t.atc is not None and t.cryptogram is not None and t.ac_data is not None
    assert t.scheme is not None
    return TapRecord(
        tap_id=t.tap_id,
        validator_id=t.validator_id,
        operator_id=t.operator_id,
        pan_token=t.pan_token,
        masked_pan=t.pan_masked,
        time=t.time.astimezone(tz),
        stop_id=t.stop_id,
        route_id=t.route_id,
        action=Action(t.action.value),
        atc=t.atc,
        arqc=t.cryptogram,
        ac_data=t.ac_data,
        scheme=t.scheme,
        rider_category=t.rider_category,
        fare_media=media(t.fare_media, t.method),
    )


# -- dead letters -------------------------------------------------------------------------

# Any run of 12 or more digits may hold a card number (a longer run may hide one inside).
# Some are not (the digits of an AID): masked all the same, the dead letter's SHA-256 names
# the original payload, which the validator's journal still holds.
_DIGITS = re.compile(rb"[0-9]{12,}")
_DIGITS_TEXT = re.compile(r"[0-9]{12,}")


def _mask(run: str) -> str:
    return run[:6] + "*" * (len(run) - 10) + run[-4:]  # 6 first + 4 last, as emv.pan does


def _mask_bytes(match: re.Match[bytes]) -> bytes:
    return _mask(match.group(0).decode()).encode()


def _mask_text(match: re.Match[str]) -> str:
    return _mask(match.group(0))


def scrub_text(text: str) -> str:
    """``text`` with every run of 12 or more digits masked (6 first + 4 last shown)."""
    return _DIGITS_TEXT.sub(_mask_text, text)


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """The dead-letter message (JSON): why a payload was refused, and what it was."""

    reason: str
    detail: str
    topic: str
    received_at: dt.datetime
    size: int
    sha256: str  # of the payload as it arrived (find it in a validator's journal)
    tap_id: str | None = None
    payload_b64: str | None = None  # up to DEAD_LETTER_PAYLOAD_MAX bytes, card numbers masked
    v: int = 1


_json = msgspec.json.Encoder()


def dead_letter(topic: str, payload: bytes, refused: Refused, received_at: dt.datetime) -> bytes:
    """The JSON the back office publishes on the dead-letter topic for a refused payload."""
    body = None
    if len(payload) <= DEAD_LETTER_PAYLOAD_MAX:
        body = base64.b64encode(_DIGITS.sub(_mask_bytes, payload)).decode()
    return _json.encode(DeadLetter(
        reason=refused.reason, detail=scrub_text(refused.detail)[:500],
        topic=scrub_text(topic)[:300], received_at=received_at.astimezone(dt.UTC),
        size=len(payload), sha256=hashlib.sha256(payload).hexdigest(),
        tap_id=refused.tap_id, payload_b64=body))


def read_dead_letter(data: bytes) -> DeadLetter:
    """A dead-letter message back (tests, tools)."""
    return msgspec.json.decode(data, type=DeadLetter)


__all__ = [
    "DEAD_LETTER_PAYLOAD_MAX", "DeadLetter", "EpurseTap", "FareMediaLabels", "Inbound",
    "Refused", "Skipped",
    "dead_letter", "epurse_row", "read_dead_letter", "read_tap", "scrub_text", "to_core",
]
