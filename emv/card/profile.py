"""Card profiles: what a card is, in a TOML or JSON file a person can read and edit.

A profile names the card's PAN, dates, holder identity, crypto suite, keys and
applications.  Keys are either hex (symmetric keys) or the name of a shipped
TEST key (asymmetric keys), so a profile never embeds a private key by accident.
Profiles are decoded with msgspec against the schema below, so a bad field is
reported with its path (``$.applications[0].aid``) and the file name.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import msgspec

from emv.epurse.issuers import TEST_ISSUERS, check_issuer_id
from emv.epurse.keys import ALGORITHM_IDS, EpurseKeyError
from emv.pan import PanError, luhn_ok, normalize_pan

BUILTIN_PACKAGE = "emv.card.profiles"

AppKind = Literal["quickpass", "epurse", "credit", "other"]
Suite = Literal["rsa", "sm2"]


class ProfileError(ValueError):
    """A card profile that cannot be used: which file (or name) and what is wrong."""

    def __init__(self, source: str, message: str) -> None:
        self.source = source
        super().__init__(f"{source}: {message}")


class HolderSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Social security holder identity kept on the card (tapsim's DF70/DF71 objects)."""

    category: str = "adult"
    birth_date: str | None = None  # YYYY-MM-DD


class CryptoSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    suite: Suite = "rsa"
    cryptogram: Literal["tdes", "sm4"] = "tdes"
    issuer_master_key: str = "0123456789ABCDEFFEDCBA9876543210"  # TEST key (hex)
    ca_index: str = "F1"
    issuer_key: str = "issuer"  # name of a shipped TEST key pair
    icc_key: str = "icc"
    cvn: int = 1


class ApplicationSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    aid: str
    label: str
    kind: AppKind = "quickpass"
    priority: int = 1
    offline_spending_amount: int = 50_000  # 9F5D, minor units
    online_only: bool = False  # card asks for online authorization on every tap
    balance: int = 0  # e-purse balance, minor units
    # e-purse (kind "epurse") only.  The issuer's TEST master keys (hex); the card holds keys
    # diversified from them by its card number (emv.epurse.keys).  Left out: the keys of the
    # TEST issuer ``issuer_id`` names (emv.epurse.issuers; 0000 has the historic TEST keys).
    epurse_key: str | None = None  # purchase master key
    load_key: str | None = None
    tac_key: str | None = None
    issuer_id: str = "0000"  # the T-Union issuer (city code, 4 hex digits) in the public data
    epurse_algorithm: Literal["tdes", "sm4"] | None = None  # None: as crypto.cryptogram
    card_number: str | None = None  # 16-20 digits; None: purse_number_of(PAN)
    key_version: int = 1
    max_balance: int = 100_000  # 1000.00 CNY, the usual T-Union cap


class ProfileSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    name: str
    description: str
    pan: str
    expiry: str  # YYYY-MM-DD
    applications: list[ApplicationSpec]
    psn: str = "01"
    effective: str = "2020-01-01"
    cardholder: str = "TEST/CARDHOLDER"
    country: str = "0156"
    currency: str = "0156"
    holder: HolderSpec | None = None
    crypto: CryptoSpec = CryptoSpec()


@dataclass(frozen=True)
class Application:
    aid: bytes
    label: str
    kind: AppKind
    priority: int
    offline_spending_amount: int
    online_only: bool
    balance: int
    epurse_key: bytes
    load_key: bytes
    tac_key: bytes
    epurse_algorithm: Literal["tdes", "sm4"] | None
    card_number: str | None
    key_version: int
    max_balance: int
    issuer_id: str = "0000"


@dataclass(frozen=True)
class Holder:
    category: str
    birth_date: dt.date | None


@dataclass(frozen=True)
class Crypto:
    suite: Suite
    cryptogram: Literal["tdes", "sm4"]
    issuer_master_key: bytes
    ca_index: int
    issuer_key: str
    icc_key: str
    cvn: int


@dataclass(frozen=True)
class CardProfile:
    """A validated profile; everything a personalisation bureau needs to make the card."""

    name: str
    description: str
    pan: str
    psn: str
    expiry: dt.date
    effective: dt.date
    cardholder: str
    country: bytes
    currency: bytes
    holder: Holder | None
    crypto: Crypto
    applications: tuple[Application, ...]
    source: str


def _issuer_id(source: str, where: str, issuer_id: str) -> str:
    try:
        return check_issuer_id(issuer_id)
    except EpurseKeyError as exc:
        raise ProfileError(source, f"{where}.issuer_id: {exc}") from None


def _epurse_key(source: str, where: str, app: ApplicationSpec, field: str,
                value: str | None) -> bytes:
    """The key given in the profile, or the TEST issuer's key for the app's issuer id."""
    if value is not None:
        return _hex(source, f"{where}.{field}", value, 16)
    issuer = TEST_ISSUERS.get(app.issuer_id)
    table = {"epurse_key": "purchase_keys", "load_key": "load_keys", "tac_key": "tac_keys"}
    algorithm = app.epurse_algorithm or "tdes"
    key = None if issuer is None else getattr(issuer, table[field]).get(
        (app.key_version, ALGORITHM_IDS[algorithm]))
    if key is None and app.kind != "epurse":
        return bytes(16)  # not an e-purse: the key is never used
    if key is None:
        raise ProfileError(source, f"{where}.{field}: no TEST key of issuer {app.issuer_id} "
                                   f"version {app.key_version}: give it in the profile")
    return bytes(key)


def _hex(source: str, field: str, value: str, size: int | None = None) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise ProfileError(source, f"{field}: not hex") from None
    if size is not None and len(raw) != size:
        raise ProfileError(source, f"{field}: must be {size} bytes, is {len(raw)}")
    return raw


def _date(source: str, field: str, value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ProfileError(source, f"{field}: {value!r} is not a YYYY-MM-DD date") from None


def _validate(spec: ProfileSpec, source: str) -> CardProfile:
    try:
        pan = normalize_pan(spec.pan)
    except PanError as exc:
        raise ProfileError(source, f"pan: {exc}") from None
    if not luhn_ok(pan):
        raise ProfileError(source, "pan: Luhn check digit is wrong")
    if not (len(spec.psn) == 2 and spec.psn.isdigit()):
        raise ProfileError(source, "psn: must be two digits")
    if not spec.applications:
        raise ProfileError(source, "applications: a card needs at least one")
    apps = []
    seen: set[bytes] = set()
    for i, app in enumerate(spec.applications):
        where = f"applications[{i}]"
        aid = _hex(source, f"{where}.aid", app.aid)
        if not 5 <= len(aid) <= 16:
            raise ProfileError(source, f"{where}.aid: an AID is 5 to 16 bytes")
        if aid in seen:
            raise ProfileError(source, f"{where}.aid: {app.aid} listed twice")
        seen.add(aid)
        if not 1 <= app.priority <= 15:
            raise ProfileError(source, f"{where}.priority: 1 (highest) to 15")
        for field in ("offline_spending_amount", "balance"):
            if getattr(app, field) < 0:
                raise ProfileError(source, f"{where}.{field}: must not be negative")
        if not app.balance <= app.max_balance <= 0xFFFFFFFF:
            raise ProfileError(source, f"{where}.max_balance: at least the balance, "
                                       "at most 4294967295")
        if not 0 <= app.key_version <= 0xFF:
            raise ProfileError(source, f"{where}.key_version: 0 to 255")
        if app.card_number is not None and not (
                app.card_number.isascii() and app.card_number.isdigit()
                and 16 <= len(app.card_number) <= 20):
            raise ProfileError(source, f"{where}.card_number: 16 to 20 digits")
        if app.card_number is not None and app.card_number.lstrip("0") == pan.lstrip("0"):
            raise ProfileError(source, f"{where}.card_number: the purse's own number, not the "
                                       "card's PAN (it is kept for clearing, where no PAN may go)")
        apps.append(Application(
            aid=aid, label=app.label, kind=app.kind, priority=app.priority,
            offline_spending_amount=app.offline_spending_amount, online_only=app.online_only,
            balance=app.balance,
            epurse_key=_epurse_key(source, where, app, "epurse_key", app.epurse_key),
            load_key=_epurse_key(source, where, app, "load_key", app.load_key),
            tac_key=_epurse_key(source, where, app, "tac_key", app.tac_key),
            epurse_algorithm=app.epurse_algorithm, card_number=app.card_number,
            key_version=app.key_version, max_balance=app.max_balance,
            issuer_id=_issuer_id(source, where, app.issuer_id),
        ))
    holder = None
    if spec.holder is not None:
        birth = spec.holder.birth_date
        holder = Holder(spec.holder.category,
                        _date(source, "holder.birth_date", birth) if birth else None)
    c = spec.crypto
    crypto = Crypto(
        suite=c.suite, cryptogram=c.cryptogram,
        issuer_master_key=_hex(source, "crypto.issuer_master_key", c.issuer_master_key, 16),
        ca_index=_hex(source, "crypto.ca_index", c.ca_index, 1)[0],
        issuer_key=c.issuer_key, icc_key=c.icc_key, cvn=c.cvn,
    )
    expiry = _date(source, "expiry", spec.expiry)
    effective = _date(source, "effective", spec.effective)
    if effective > expiry:
        raise ProfileError(source, "effective: after the expiry date")
    return CardProfile(
        name=spec.name, description=spec.description, pan=pan, psn=spec.psn,
        expiry=expiry, effective=effective, cardholder=spec.cardholder,
        country=_hex(source, "country", spec.country, 2),
        currency=_hex(source, "currency", spec.currency, 2),
        holder=holder, crypto=crypto, applications=tuple(apps), source=source,
    )


def parse_profile(text: bytes, source: str, fmt: Literal["toml", "json"]) -> CardProfile:
    """Decode and validate a profile; every problem is a ProfileError naming ``source``."""
    try:
        if fmt == "toml":
            spec = msgspec.toml.decode(text, type=ProfileSpec)
        else:
            spec = msgspec.json.decode(text, type=ProfileSpec)
    except msgspec.ValidationError as exc:
        raise ProfileError(source, str(exc)) from None
    except (msgspec.DecodeError, json.JSONDecodeError) as exc:
        raise ProfileError(source, f"not valid {fmt.upper()}: {exc}") from None
    return _validate(spec, source)


def builtin_names() -> list[str]:
    """Names of the profiles shipped with tapsim."""
    root = resources.files(BUILTIN_PACKAGE)
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".toml"))


def load_profile(name_or_path: str) -> CardProfile:
    """A built-in profile by name, or a .toml/.json file by path."""
    path = Path(name_or_path)
    if path.suffix in (".toml", ".json"):
        try:
            text = path.read_bytes()
        except OSError as exc:
            raise ProfileError(str(path), f"cannot read: {exc.strerror}") from None
        return parse_profile(text, str(path), "toml" if path.suffix == ".toml" else "json")
    if name_or_path not in builtin_names():
        known = ", ".join(builtin_names())
        raise ProfileError(name_or_path, f"no such built-in card (known: {known}) "
                                         "and not a .toml/.json path")
    text = resources.files(BUILTIN_PACKAGE).joinpath(f"{name_or_path}.toml").read_bytes()
    return parse_profile(text, f"built-in:{name_or_path}", "toml")
