"""The cards file of ``tapsim backoffice replay``: which card each card id of a taps CSV is,
and how its bank account stands (format: backoffice/README.md, "The cards file").

A TOML file, decoded with msgspec against the schema below so a wrong field is reported with
its path (``$.cards.bob.balance``) and the file name; or, for a quick run, a comma list of
built-in card profile names (each name is then the card id, with the defaults).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Annotated

import msgspec

from backoffice.branch import (
    ACTIONS,
    BUILTIN_BANKS,
    DEFAULT_BANK,
    BranchError,
    bank_from_dict,
    merge_banks,
)
from emv.card.profile import CardProfile, ProfileError, builtin_names, load_profile
from emv.pan import PanError, luhn_ok, mask_pan, normalize_pan
from issuer.journal import MAX_AMOUNT
from issuer.models import ReplaceReason
from issuer.policy import BankPolicy

DEFAULT_BALANCE = 10_000  # 100.00 in minor units
STATES = ("active", "not-activated", "lost", "sealed", "dormant", "expired", "cancelled",
          "replaced")  # fmt: skip
_CARD_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class CardsFileError(ValueError):
    """A cards file that cannot be used: which file (or list) and what is wrong where."""

    def __init__(self, source: str, message: str) -> None:
        self.source = source
        super().__init__(f"{source}: {message}")


AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]


class _Event(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    at: AwareDatetime
    action: str
    amount: int | None = None


class _Card(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    profile: str
    pan: str | None = None
    balance: int = DEFAULT_BALANCE
    bank: str = DEFAULT_BANK
    state: str = "active"
    expires: date | None = None
    replaced_by: str | None = None
    replace_reason: str = "loss"
    events: list[_Event] = []


class _File(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    cards: dict[str, _Card]
    banks: dict[str, dict[str, object]] = {}


@dataclass(frozen=True, slots=True)
class CardEvent:
    """A branch action on the card during the replay (at its time in the timeline)."""

    at: datetime
    action: str
    amount: int | None = None


@dataclass(frozen=True, slots=True)
class CardSpec:
    card_id: str
    profile: CardProfile
    balance: int = DEFAULT_BALANCE
    bank: str = DEFAULT_BANK
    state: str = "active"
    expires: date | None = None  # the bank's record of the expiry date (None: the chip's)
    replaced_by: str | None = None
    replace_reason: ReplaceReason = ReplaceReason.LOSS
    events: tuple[CardEvent, ...] = ()

    @property
    def masked_pan(self) -> str:
        return mask_pan(self.profile.pan)


@dataclass(frozen=True, slots=True)
class CardsFile:
    source: str
    cards: dict[str, CardSpec]
    banks: tuple[BankPolicy, ...]  # built-in banks merged with the file's

    def profiles(self) -> list[CardProfile]:
        return [c.profile for c in self.cards.values()]


def load_cards(spec: str) -> CardsFile:
    """A cards file by path, or a comma list of built-in profile names."""
    path = Path(spec)
    if path.suffix == ".toml" or path.exists():
        try:
            text = path.read_bytes()
        except OSError as exc:
            raise CardsFileError(spec, f"cannot read: {exc.strerror}") from None
        return parse_cards(text, str(path), base=path.parent)
    names = [n.strip() for n in spec.split(",")]
    if not all(names):
        raise CardsFileError(spec, "an empty name in the list of built-in cards")
    known = builtin_names()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise CardsFileError(
            spec, f"not a cards file, and no built-in card {', '.join(map(repr, unknown))} "
            f"(built-in: {', '.join(known)})",
        )  # fmt: skip
    cards = {n: CardSpec(n, _profile(spec, f"card {n}", n, Path("."))) for n in names}
    return CardsFile(spec, _unique(spec, cards), BUILTIN_BANKS)


def parse_cards(text: bytes, source: str, *, base: Path = Path(".")) -> CardsFile:
    """Decode and check a cards file; profile paths are relative to ``base``."""
    try:
        raw = msgspec.toml.decode(text, type=_File)
    except msgspec.ValidationError as exc:
        raise CardsFileError(source, str(exc)) from None
    except msgspec.DecodeError as exc:
        raise CardsFileError(source, f"not valid TOML: {exc}") from None
    try:
        banks = merge_banks(
            BUILTIN_BANKS,
            [bank_from_dict({"bank_id": bid, **fields}, f"banks.{bid}")
             for bid, fields in raw.banks.items()],
        )  # fmt: skip
    except BranchError as exc:
        raise CardsFileError(source, str(exc)) from None
    bank_ids = {b.bank_id for b in banks}
    if not raw.cards:
        raise CardsFileError(source, "no [cards.<id>] tables")
    cards: dict[str, CardSpec] = {}
    for card_id, c in raw.cards.items():
        where = f"cards.{card_id}"
        if not _CARD_ID.fullmatch(card_id):
            raise CardsFileError(source, f"{where}: a card id is 1-64 of A-Z a-z 0-9 . _ -")
        profile = _profile(source, where, c.profile, base)
        if c.pan is not None:
            try:
                pan = normalize_pan(c.pan)
            except PanError as exc:
                raise CardsFileError(source, f"{where}.pan: {exc}") from None
            if not luhn_ok(pan):
                raise CardsFileError(source, f"{where}.pan: Luhn check digit is wrong")
            profile = dataclasses.replace(profile, pan=pan)
        if not 0 <= c.balance <= MAX_AMOUNT:
            raise CardsFileError(source, f"{where}.balance: {c.balance} is out of range: 0 to "
                                         f"{MAX_AMOUNT:,} minor units")
        if c.bank not in bank_ids:
            raise CardsFileError(
                source, f"{where}.bank: no bank {c.bank!r} (known: {', '.join(sorted(bank_ids))})"
            )
        state = c.state.replace("_", "-")
        if state not in STATES:
            raise CardsFileError(source, f"{where}.state: {c.state!r} is not one of "
                                         f"{', '.join(STATES)}")  # fmt: skip
        if (state == "replaced") != (c.replaced_by is not None):
            raise CardsFileError(source, f"{where}: state 'replaced' and replaced_by go together")
        try:
            reason = ReplaceReason(c.replace_reason)
        except ValueError:
            reasons = ", ".join(r.value for r in ReplaceReason)
            raise CardsFileError(source, f"{where}.replace_reason: one of {reasons}") from None
        events = []
        for i, e in enumerate(c.events):
            ew = f"{where}.events[{i}]"
            if e.action not in ACTIONS:
                raise CardsFileError(source, f"{ew}.action: {e.action!r} is not one of "
                                             f"{', '.join(ACTIONS)}")  # fmt: skip
            if (e.action == "deposit") != (e.amount is not None):
                raise CardsFileError(source, f"{ew}: amount is for deposits, and they need one")
            if e.amount is not None and not 1 <= e.amount <= MAX_AMOUNT:
                raise CardsFileError(source, f"{ew}.amount: {e.amount} is out of range: 1 to "
                                             f"{MAX_AMOUNT:,} minor units")
            events.append(CardEvent(e.at, e.action, e.amount))
        cards[card_id] = CardSpec(
            card_id, profile, c.balance, c.bank, state, c.expires, c.replaced_by, reason,
            tuple(sorted(events, key=lambda e: e.at)),
        )  # fmt: skip
    for card_id, spec in cards.items():
        if spec.replaced_by is None:
            continue
        new = cards.get(spec.replaced_by)
        where = f"cards.{card_id}.replaced_by"
        if new is None or new is spec:
            raise CardsFileError(source, f"{where}: {spec.replaced_by!r} is not another card here")
        if new.state == "replaced" or sum(
            1 for s in cards.values() if s.replaced_by == spec.replaced_by
        ) > 1:  # fmt: skip
            raise CardsFileError(source, f"{where}: {spec.replaced_by!r} replaces one card, once")
        if new.profile.crypto.cryptogram != spec.profile.crypto.cryptogram:
            raise CardsFileError(source, f"{where}: a replacement keeps the cryptogram scheme")
    return CardsFile(source, _unique(source, cards), tuple(banks))


def _profile(source: str, where: str, name: str, base: Path) -> CardProfile:
    candidate = name
    if Path(name).suffix in (".toml", ".json") and not Path(name).is_absolute():
        candidate = str(base / name)
    try:
        return load_profile(candidate)
    except ProfileError as exc:
        raise CardsFileError(source, f"{where}.profile: {exc}") from None


def _unique(source: str, cards: dict[str, CardSpec]) -> dict[str, CardSpec]:
    seen: dict[str, str] = {}
    for card_id, spec in cards.items():
        other = seen.get(spec.profile.pan)
        if other is not None:
            raise CardsFileError(
                source, f"cards {other} and {card_id} are the same card ({spec.masked_pan}); "
                "give one another TEST PAN (pan = ...)",
            )  # fmt: skip
        seen[spec.profile.pan] = card_id
    return cards
