"""The messages validators and the back office exchange, version 1.

Every message is a msgspec Struct encoded as a MessagePack *array* (``array_like``):
field names never travel, which keeps a tap record near 200 bytes.  The first element
is the message's tag (``"tap/1"``, ``"dls/1"`` ...), which names kind and major version
together, so one decoder accepts a tagged union and a new major version is a new tag.
Minor evolution appends optional fields at the end: an older decoder ignores trailing
elements it does not know, a newer one fills missing trailing fields with defaults.
wire/README.md is the normative description; keep the two in step.

Constraints sit in the types (``Meta``): a decoder built from these types rejects a
wrong type, an over-long string or list, a malformed token or a naive time, and says
which field.  Nothing here holds a clear PAN: a tap carries the keyed token and the
6+4 mask only.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Annotated

import msgspec

# -- field types ---------------------------------------------------------------------------

# A validator id ends up in a topic name: no '/', '+', '#', and short.
VALIDATOR_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$"
ValidatorId = Annotated[str, msgspec.Meta(pattern=VALIDATOR_ID_PATTERN)]
Ident = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$")]
Label = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]{0,32}$")]
Token = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{32}$")]  # emv.pan.pan_token, hex
MaskedPan = Annotated[str, msgspec.Meta(pattern=r"^\d{6}\*{2,9}\d{4}$")]
AidHex = Annotated[str, msgspec.Meta(pattern=r"^(?:[0-9A-F]{2}){5,16}$")]
ReasonText = Annotated[str, msgspec.Meta(max_length=120)]
Time = Annotated[dt.datetime, msgspec.Meta(tz=True)]  # aware; MessagePack timestamp = UTC
Version = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Fen = Annotated[int, msgspec.Meta(ge=0, le=999_999_999_999)]
U16 = Annotated[int, msgspec.Meta(ge=0, le=0xFFFF)]
Byte = Annotated[int, msgspec.Meta(ge=0, le=0xFF)]
Seq = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
Currency = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$")]

# Size limits: a snapshot of a million tokens is ~35 MB; everything else is small.
MAX_DENY_TOKENS = 1_000_000
MAX_DELTA_TOKENS = 100_000
TokenList = Annotated[list[Token], msgspec.Meta(max_length=MAX_DENY_TOKENS)]
DeltaList = Annotated[list[Token], msgspec.Meta(max_length=MAX_DELTA_TOKENS)]


class Action(StrEnum):
    """What the rider did (the back office's journey builder reads it)."""

    TAP = "tap"  # single tap, flat fare (bus)
    TAP_ON = "tap_on"
    TAP_OFF = "tap_off"


class Method(StrEnum):
    """How the card paid: EMV (QuickPass, charged later by the back office through the
    issuer) or the T-Union e-purse (debited on the card during the tap)."""

    EMV = "emv"
    EPURSE = "epurse"


class TapOutcome(StrEnum):
    """What the validator decided and showed; only ``accepted`` taps are charged."""

    ACCEPTED = "accepted"
    DENY_LISTED = "deny_listed"
    DUPLICATE = "duplicate"
    DECLINED = "declined"  # the kernel or a local rule said no (reason says which)


class _Msg(msgspec.Struct, array_like=True, frozen=True, tag_field="kind"):
    """Common config: arrays on the wire, tag first."""


class TapRecord(_Msg, tag="tap/1", frozen=True):
    """One tap, journaled at the validator before its outcome was shown.

    ``tap_id`` is stable across resends (validator id, journal epoch, journal sequence),
    so the back office dedupes on it.  A ``method="emv"`` tap (QuickPass, open loop) carries
    the cryptogram fields; ``ac_data`` is exactly what the card computed its cryptogram over
    (terminal data || AIP || ATC || CVR), so the issuer verifies it without knowing the
    kernel's layout.  A ``method="epurse"`` tap (T-Union, closed loop: the fare is already
    taken from the card) carries the purchase proof: balances, the card's serial, the TAC
    and the PSAM that took it.
    """

    tap_id: Ident
    validator_id: ValidatorId
    operator_id: Ident
    seq: Seq
    time: Time
    stop_id: Ident
    route_id: Ident
    action: Action
    outcome: TapOutcome
    reason: ReasonText | None
    method: Method
    pan_token: Token
    pan_masked: MaskedPan
    aid: AidHex
    amount: Fen
    currency: Currency
    rider_category: Label
    fare_media: Label
    deny_list_version: Version
    fare_table_version: Version
    # method "emv"
    oda: Label = "none"
    oda_ok: bool | None = None
    atc: U16 | None = None
    cryptogram: Annotated[bytes, msgspec.Meta(min_length=8, max_length=8)] | None = None
    cid: Byte | None = None
    iad: Annotated[bytes, msgspec.Meta(max_length=32)] | None = None
    aip: Annotated[bytes, msgspec.Meta(min_length=2, max_length=2)] | None = None
    ac_data: Annotated[bytes, msgspec.Meta(min_length=1, max_length=255)] | None = None
    scheme: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9_]{1,16}$")] | None = None
    # method "epurse"
    epurse_balance_before: Fen | None = None
    epurse_balance_after: Fen | None = None
    epurse_serial: U16 | None = None
    tac: Annotated[bytes, msgspec.Meta(min_length=4, max_length=4)] | None = None
    psam_id: Annotated[str, msgspec.Meta(pattern=r"^(?:[0-9A-F]{2}){1,16}$")] | None = None
    psam_serial: Annotated[int, msgspec.Meta(ge=0, le=0xFFFFFFFF)] | None = None
    # method "epurse", for clearing (appended later: optional, older records still decode).
    # The e-purse's issuer id (city code), its application serial number (the e-purse's card
    # number, not a bank PAN: clearing diversifies the TAC key from it), key version and
    # algorithm id, and the date-time digits the TAC covers (validator's local wall clock).
    epurse_issuer: Annotated[str, msgspec.Meta(pattern=r"^[0-9A-F]{4}$")] | None = None
    epurse_card: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{16,20}$")] | None = None
    epurse_key_version: Byte | None = None
    epurse_algorithm: Byte | None = None
    epurse_when: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{14}$")] | None = None

    def __post_init__(self) -> None:
        # Raised while decoding, msgspec reports it as a validation error (reason malformed).
        needs = _EMV_FIELDS if self.method is Method.EMV else _EPURSE_FIELDS
        missing = [name for name in needs if getattr(self, name) is None]
        if missing and self.outcome is TapOutcome.ACCEPTED:
            raise ValueError(f"an accepted {self.method.value} tap needs {', '.join(missing)}")


_EMV_FIELDS = ("atc", "cryptogram", "cid", "aip", "ac_data", "scheme")
_EPURSE_FIELDS = ("epurse_balance_before", "epurse_balance_after", "epurse_serial", "tac",
                  "psam_id", "psam_serial")


class DenyListSnapshot(_Msg, tag="dls/1", frozen=True):
    """The whole deny list at ``version`` (published retained: a new subscriber starts here)."""

    version: Version
    issued_at: Time
    tokens: TokenList


class DenyListDelta(_Msg, tag="dld/1", frozen=True):
    """Changes from ``from_version`` to ``to_version`` (QoS 1, queued for offline validators)."""

    from_version: Version
    to_version: Version
    issued_at: Time
    add: DeltaList
    remove: DeltaList


class FareTableVersion(_Msg, tag="fare/1", frozen=True):
    """Which fare table is in force from when; validators stamp taps with the version."""

    version: Version
    table_id: Ident
    sha256: Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
    effective_from: Time
    issued_at: Time


class Signed(_Msg, tag="sig/1", frozen=True):
    """Envelope of every downlink message: an Ed25519 signature over the encoded body.

    The signature covers ``SIGNING_CONTEXT || body``, so a signature made for this
    purpose cannot be replayed as anything else the back office key signs.
    """

    key_id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._-]{1,32}$")]
    body: Annotated[bytes, msgspec.Meta(max_length=64 * 1024 * 1024)]
    signature: Annotated[bytes, msgspec.Meta(min_length=64, max_length=64)]


MAX_ACK_IDS = 4096


class CommitAck(_Msg, tag="ack/1", frozen=True):
    """The back office's end-to-end acknowledgement to one validator: these taps of yours are
    committed to the ledger (or refused for good, dead-lettered): stop resending them.

    Travels on ``tapsim/v1/commits/<validator id>``, which only the back office may write and
    only that validator may read (the broker's rules), QoS 1.  An id the validator does not
    hold pending is ignored, so a repeated or late acknowledgement is harmless.
    """

    validator_id: ValidatorId
    issued_at: Time
    tap_ids: Annotated[list[Ident], msgspec.Meta(max_length=MAX_ACK_IDS)]


Downlink = DenyListSnapshot | DenyListDelta | FareTableVersion
Message = TapRecord | DenyListSnapshot | DenyListDelta | FareTableVersion | Signed | CommitAck
