"""Encode and decode wire messages: MessagePack, strict types, size limits first.

A payload is checked against the size limit of the kind the caller expects *before*
anything is parsed, then decoded against the tagged union of all v1 messages (so a
message of another kind is named, not just "invalid"), then its kind is checked.
Every failure is a :class:`~wire.errors.WireError`; schema errors name the field
(``tokens[3]: expected str matching ...``) rather than msgspec's array index.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Final, TypeVar

import msgspec

from wire.errors import Reason, WireError
from wire.messages import (
    CommitAck,
    DenyListDelta,
    DenyListSnapshot,
    FareTableVersion,
    Message,
    Signed,
    TapRecord,
)

M = TypeVar("M", TapRecord, DenyListSnapshot, DenyListDelta, FareTableVersion, Signed,
              CommitAck)

KIB, MIB = 1024, 1024 * 1024
# The most a payload of each kind may be; mosquitto's own limit is far above these.
SIZE_LIMITS: Final[dict[type[Any], int]] = {
    TapRecord: 4 * KIB,
    FareTableVersion: 1 * KIB,
    DenyListDelta: 8 * MIB,
    DenyListSnapshot: 48 * MIB,
    Signed: 48 * MIB + 1 * KIB,
    CommitAck: 256 * KIB,
}
KINDS: Final[dict[str, type[Any]]] = {
    str(t.__struct_config__.tag): t
    for t in (TapRecord, DenyListSnapshot, DenyListDelta, FareTableVersion, Signed, CommitAck)
}
_TIME_FIELDS: Final[dict[type[Any], tuple[str, ...]]] = {
    TapRecord: ("time",),
    DenyListSnapshot: ("issued_at",),
    DenyListDelta: ("issued_at",),
    FareTableVersion: ("effective_from", "issued_at"),
    Signed: (),
    CommitAck: ("issued_at",),
}

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[Message] = msgspec.msgpack.Decoder(Message)
_PATH = re.compile(r"\$\[(\d+)\]")


def kind_of(msg_type: type[Any]) -> str:
    """The tag (kind and major version) a message type travels under."""
    return str(msg_type.__struct_config__.tag)


def encode(msg: Message) -> bytes:
    """MessagePack bytes of a message; refuses naive times (they would not decode)."""
    for name in _TIME_FIELDS[type(msg)]:
        value: dt.datetime = getattr(msg, name)
        if value.tzinfo is None or value.utcoffset() is None:
            raise WireError(Reason.INVALID, f"{kind_of(type(msg))}.{name}: time has no UTC offset")
    return _encoder.encode(msg)


def decode(payload: bytes, expect: type[M]) -> M:
    """Decode ``payload`` as a message of type ``expect`` or raise WireError saying why."""
    limit = SIZE_LIMITS[expect]
    if len(payload) > limit:
        raise WireError(Reason.TOO_LARGE,
                        f"{kind_of(expect)}: {len(payload)} bytes, limit {limit}")
    try:
        msg = _decoder.decode(payload)
    except msgspec.ValidationError as exc:
        raise _schema_error(payload, str(exc)) from None
    except msgspec.DecodeError as exc:  # msgspec >= 0.23 also says so for a str that is not UTF-8
        raise WireError(Reason.MALFORMED, f"not MessagePack: {exc}") from None
    except UnicodeDecodeError as exc:  # msgspec < 0.23's answer to a str that is not UTF-8
        raise WireError(Reason.MALFORMED,
                        f"not MessagePack: text that is not UTF-8 at byte {exc.start}") from None
    if not isinstance(msg, expect):
        got = kind_of(type(msg))
        raise WireError(Reason.WRONG_KIND, f"expected {kind_of(expect)}, got {got}", kind=got)
    return msg


def _schema_error(payload: bytes, message: str) -> WireError:
    """Turn msgspec's ``... - at `$[3][1]``` into ``field[1]: ...`` for the kind at hand."""
    text, _, where = message.partition(" - at ")
    kind = _peek_kind(payload)
    if where.strip("`") == "$[0]" or where == "":
        if kind is not None and kind not in KINDS:
            return WireError(Reason.UNKNOWN_KIND, f"kind {kind!r} (this decoder knows "
                                                  f"{', '.join(sorted(KINDS))})")
        if kind is not None and where == "" and not text.startswith("Expected `array`"):
            return WireError(Reason.MALFORMED, f"{kind}: {text}")  # a whole-message rule
        return WireError(Reason.MALFORMED, f"{text} (a message is an array led by its kind)")
    msg_type = KINDS.get(kind or "")
    path = where.strip("`")
    if msg_type is not None:
        names = ("kind", *msg_type.__struct_fields__)

        def name(m: re.Match[str]) -> str:
            i = int(m.group(1))
            return names[i] if i < len(names) else f"[{i}]"

        path = _PATH.sub(name, path, count=1)
        return WireError(Reason.MALFORMED, f"{kind}.{path}: {text}")
    return WireError(Reason.MALFORMED, f"{path}: {text}")


def _peek_kind(payload: bytes) -> str | None:
    """The first element of the top-level array if it is a string (elements stay raw)."""
    try:
        head = msgspec.msgpack.decode(payload, type=list[msgspec.Raw])
        first = msgspec.msgpack.decode(head[0]) if head else None
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
        return None  # msgspec raises UnicodeDecodeError for a str that is not UTF-8
    return first if isinstance(first, str) else None
