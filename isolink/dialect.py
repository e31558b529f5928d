"""The ISO 8583 dialect as data, and the codec that builds and parses messages with it.

A :class:`Dialect` is loaded from a JSON file (``isolink/dialect.json`` by default, or
``--spec FILE``): pyiso8583 field definitions, which message types exist and what each
must carry, which POS condition code means which kind of authorization, the currencies
by ISO 4217 numeric code.  Nothing about the dialect is written in code, so a user can
point tapsim at their own host's dialect as long as it keeps the field *meanings* of
isolink/README.md.

Decoding checks, in order: pyiso8583's parse (lengths, bitmap, trailing bytes), then that
every present field belongs to the dialect, then each field's character class, then the
fields the message type requires.  Any failure is a :class:`MessageFormatError` that
still carries the MTI and STAN when they could be read, so a host can answer "30"
(format error) instead of dropping the message.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import iso8583
from iso8583.specs import default_ascii

DEFAULT_SPEC = Path(__file__).with_name("dialect.json")

Fields = dict[str, Any]  # field number (or "t") -> str (binary fields: upper-case hex)

_CLASSES: dict[str, re.Pattern[str]] = {
    "n": re.compile(r"[0-9]*"),
    "an": re.compile(r"[0-9A-Za-z ]*"),
    "ans": re.compile(r"[\x20-\x7e]*"),
    "hex": re.compile(r"[0-9a-f]*"),
}
_SPEC_KEYS = {"data_enc", "len_enc", "len_type", "max_len", "desc"}
_SPEC_OPTIONAL = {"len_count", "left_pad", "left_pad_len", "right_pad"}


class SpecError(ValueError):
    """A dialect file that cannot be used: which file, which entry, what is wrong."""


class MessageFormatError(ValueError):
    """A message that does not follow the dialect; ``mti``/``stan`` when they were read."""

    def __init__(self, reason: str, *, field: str | None = None, mti: str | None = None,
                 stan: str | None = None, partial: Fields | None = None) -> None:
        self.reason = reason
        self.field = field
        self.mti = mti
        self.stan = stan
        self.partial: Fields = partial or {}
        where = f"field {field}: " if field else ""
        super().__init__(f"{where}{reason}")


@dataclass(frozen=True)
class MessageRule:
    """One message type of the dialect: its answer, required and echoed fields."""

    mti: str
    answer: str
    what: str
    required: tuple[str, ...]
    echo: tuple[str, ...]


@dataclass(frozen=True)
class Dialect:
    """A loaded dialect (see the module docstring); build with :func:`load_dialect`."""

    name: str
    version: int
    source: str
    max_message_bytes: int
    fields: Mapping[str, Mapping[str, Any]]  # the dialect's own field definitions
    spec: Mapping[str, Mapping[str, Any]]  # what pyiso8583 parses with (see _decode_spec)
    formats: Mapping[str, str]
    messages: Mapping[str, MessageRule]
    repeats: Mapping[str, str]
    pos_codes: Mapping[str, str]  # POS condition code -> authorization kind
    network_codes: Mapping[str, str]
    currencies: Mapping[str, str]  # ISO 4217 numeric -> alpha
    host_codes: Mapping[str, str]

    @property
    def answers(self) -> dict[str, str]:
        """Answer MTI -> the request MTI it answers."""
        return {r.answer: r.mti for r in self.messages.values()}

    def kind_code(self, kind: str) -> str:
        """The POS condition code (field 25) for an authorization kind."""
        for code, name in self.pos_codes.items():
            if name == kind:
                return code
        raise SpecError(f"{self.source}: pos_condition_codes has no code for {kind!r}")

    def currency_code(self, alpha: str) -> str:
        """ISO 4217 numeric code (field 49) for an alpha code."""
        for num, name in self.currencies.items():
            if name == alpha:
                return num
        raise SpecError(f"{self.source}: currencies has no numeric code for {alpha!r}")

    # -- the codec ---------------------------------------------------------------------

    def encode(self, fields: Fields) -> bytes:
        """One message's bytes (no length header); MessageFormatError for what the dialect
        does not allow, so nothing malformed leaves this side."""
        mti = str(fields.get("t", ""))
        unknown = sorted((k for k in fields if k not in self.fields), key=_order)
        if unknown:
            raise MessageFormatError("not in the dialect", field=unknown[0], mti=mti)
        self._check_formats(fields, mti, fields.get("11"))
        try:
            raw, _ = iso8583.encode(dict(fields), cast(Any, self.spec))
        except iso8583.EncodeError as exc:
            raise MessageFormatError(exc.msg, field=exc.field, mti=mti) from None
        if len(raw) > self.max_message_bytes:
            raise MessageFormatError(f"{len(raw)} bytes, above the dialect's "
                                     f"{self.max_message_bytes}", mti=mti)
        return bytes(raw)

    def decode(self, data: bytes) -> Fields:
        """The fields of one message (no bitmaps: ``encode`` derives them again)."""
        try:
            doc, _ = iso8583.decode(data, cast(Any, self.spec))
        except iso8583.DecodeError as exc:
            partial = dict(exc.doc_dec)
            raise MessageFormatError(exc.msg, field=exc.field, mti=_mti(partial),
                                     stan=_stan(partial), partial=partial) from None
        fields: Fields = dict(doc)
        for derived in ("h", "p", "1"):  # the header and the bitmaps follow from the fields
            fields.pop(derived, None)
        mti, stan = _mti(fields), _stan(fields)
        unknown = sorted((k for k in fields if k not in self.fields), key=_order)
        if unknown:
            raise MessageFormatError("not in the dialect", field=unknown[0], mti=mti, stan=stan,
                                     partial=fields)
        self._check_formats(fields, mti, stan)
        return fields

    def rule(self, mti: str) -> MessageRule | None:
        """The rule of a request MTI (a repeat, xx01/xx21, counts as its original)."""
        return self.messages.get(self.repeats.get(mti, mti))

    def check_required(self, fields: Fields) -> MessageRule:
        """The message's rule when it is a request of the dialect with every field it needs."""
        mti, stan = _mti(fields), _stan(fields)
        rule = self.rule(mti or "")
        if rule is None:
            raise MessageFormatError(f"message type {mti!r} is not a request of this dialect",
                                     field="t", mti=mti, stan=stan, partial=fields)
        for f in rule.required:
            if f not in fields:
                raise MessageFormatError(f"required by {rule.mti}, missing", field=f, mti=mti,
                                         stan=stan, partial=fields)
        return rule

    def _check_formats(self, fields: Fields, mti: str | None, stan: object) -> None:
        for key, value in fields.items():
            cls = self.formats.get(key)
            if cls is None:
                continue
            if not isinstance(value, str) or not _CLASSES[cls].fullmatch(value):
                raise MessageFormatError(f"not {cls} ({value!r})", field=key, mti=mti,
                                         stan=stan if isinstance(stan, str) else None,
                                         partial=fields)


def _order(key: str) -> int:
    return int(key) if key.isdigit() else -1


def _mti(fields: Mapping[str, Any]) -> str | None:
    t = fields.get("t")
    return t if isinstance(t, str) and len(t) == 4 and t.isdigit() else None


def _stan(fields: Mapping[str, Any]) -> str | None:
    s = fields.get("11")
    return s if isinstance(s, str) and len(s) == 6 and s.isdigit() else None


# -- loading --------------------------------------------------------------------------------


def load_dialect(path: str | Path | None = None) -> Dialect:
    """The dialect in ``path`` (default: tapsim's own); SpecError naming file and entry."""
    path = Path(path) if path is not None else DEFAULT_SPEC
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: not JSON: {exc}") from None
    return dialect_from_dict(raw, str(path))


def dialect_from_dict(raw: object, source: str = "<dict>") -> Dialect:
    """A Dialect from the JSON structure of dialect.json (checked entry by entry)."""
    if not isinstance(raw, dict):
        raise SpecError(f"{source}: the top level must be an object")

    def section(name: str) -> dict[str, Any]:
        value = raw.get(name)
        if not isinstance(value, dict):
            raise SpecError(f"{source}: {name}: missing, or not an object")
        return value

    fields = section("fields")
    for key in ("t", "p"):
        if key not in fields:
            raise SpecError(f"{source}: fields.{key}: missing (the MTI and primary bitmap)")
    for key, entry in fields.items():
        where = f"{source}: fields.{key}"
        if key not in ("h", "t", "p") and not (key.isdigit() and 1 <= int(key) <= 128):
            raise SpecError(f"{where}: a field is 'h', 't', 'p' or a number 1-128")
        if not isinstance(entry, dict):
            raise SpecError(f"{where}: must be an object")
        missing = _SPEC_KEYS - set(entry)
        if missing:
            raise SpecError(f"{where}: missing {', '.join(sorted(missing))}")
        extra = set(entry) - _SPEC_KEYS - _SPEC_OPTIONAL
        if extra:
            raise SpecError(f"{where}: unknown key(s) {', '.join(sorted(extra))}")
        if entry["len_type"] not in (0, 1, 2, 3, 4) or not isinstance(entry["max_len"], int):
            raise SpecError(f"{where}: len_type must be 0-4 and max_len an integer")
    formats = section("formats")
    for key, cls in formats.items():
        if key not in fields or cls not in _CLASSES:
            raise SpecError(f"{source}: formats.{key}: needs a field of the dialect and one of "
                            f"{', '.join(_CLASSES)}")
    messages: dict[str, MessageRule] = {}
    for mti, entry in section("messages").items():
        where = f"{source}: messages.{mti}"
        if not (isinstance(entry, dict) and len(mti) == 4 and mti.isdigit()):
            raise SpecError(f"{where}: a 4-digit MTI with an object")
        try:
            rule = MessageRule(mti, str(entry["answer"]), str(entry.get("what", "")),
                               tuple(map(str, entry["required"])), tuple(map(str, entry["echo"])))
        except (KeyError, TypeError) as exc:
            raise SpecError(f"{where}: needs answer, required and echo ({exc})") from None
        for f in (*rule.required, *rule.echo):
            if f not in fields:
                raise SpecError(f"{where}: field {f} is not in fields")
        messages[mti] = rule
    framing = section("framing")
    if framing.get("length_header_bytes") != 2:
        raise SpecError(f"{source}: framing.length_header_bytes: tapsim frames with 2 bytes")
    max_bytes = framing.get("max_message_bytes")
    if not isinstance(max_bytes, int) or not 64 <= max_bytes <= 0xFFFF:
        raise SpecError(f"{source}: framing.max_message_bytes: an integer 64-65535")
    pos_codes = {str(k): str(v) for k, v in section("pos_condition_codes").items()}
    kinds = {"account_verification", "purchase", "deferred", "resubmission"}
    if set(pos_codes.values()) != kinds:
        raise SpecError(f"{source}: pos_condition_codes: one code for each of "
                        f"{', '.join(sorted(kinds))}")
    name, version = raw.get("name"), raw.get("version")
    if not isinstance(name, str) or not isinstance(version, int):
        raise SpecError(f"{source}: name (text) and version (integer) are required")
    return Dialect(
        name=name, version=version, source=source, max_message_bytes=max_bytes,
        fields=fields, spec=_decode_spec(fields), formats=dict(formats), messages=messages,
        repeats={str(k): str(v) for k, v in raw.get("repeats", {}).items()},
        pos_codes=pos_codes,
        network_codes={str(k): str(v) for k, v in section("network_codes").items()},
        currencies={str(k): str(v) for k, v in section("currencies").items()},
        host_codes={str(k): str(v) for k, v in raw.get("host_codes", {}).items()},
    )  # fmt: skip


def _decode_spec(fields: Mapping[str, Any]) -> dict[str, Any]:
    """pyiso8583's spec: the dialect's fields over pyiso8583's default ASCII definitions.

    A bitmap naming a field outside the dialect then still parses (as the default
    defines it), so the message's STAN is read and the host can answer "30" naming the
    field, instead of pyiso8583 failing with a bare KeyError."""
    spec: dict[str, Any] = {k: dict(v) for k, v in default_ascii.items()}
    spec.update({k: dict(v) for k, v in fields.items()})
    return spec
