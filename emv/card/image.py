"""Personalisation: from a profile to the card's fixed data (records, FCIs, keys).

What a personalisation bureau does once per card: derive the card's cryptogram
key from the issuer master key, have the issuer sign the card's public key over
its static data, and lay the data out in files and records.  The result is
immutable and shared by every state of the same card, so making a card image is
paid once per profile (cached), not per tap.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

from emv import tlv
from emv.appdata import ALGORITHM_SM4, ALGORITHM_TDES, CVN_SM4, CVN_TDES
from emv.card.profile import Application, CardProfile
from emv.crypto.cryptogram import CryptogramScheme, scheme
from emv.dol import DolEntry
from emv.epurse.application import EpurseImage, epurse_image, purse_number_of
from emv.oda import card_oda

PPSE_NAME = b"2PAY.SYS.DDF01"

# The PDOL of a QuickPass application: qPBOC's list plus DF69, the SM support indicator.
PDOL: tuple[DolEntry, ...] = (
    DolEntry(0x9F66, 4), DolEntry(0x9F02, 6), DolEntry(0x9F03, 6), DolEntry(0x9F1A, 2),
    DolEntry(0x95, 5), DolEntry(0x5F2A, 2), DolEntry(0x9A, 3), DolEntry(0x9C, 1),
    DolEntry(0x9F37, 4), DolEntry(0xDF69, 1),
)
# CDOL1 asks for the same terminal data the AC covers (emv.appdata.AC_TERMINAL_DATA).
CDOL1: tuple[DolEntry, ...] = (
    DolEntry(0x9F02, 6), DolEntry(0x9F03, 6), DolEntry(0x9F1A, 2), DolEntry(0x95, 5),
    DolEntry(0x5F2A, 2), DolEntry(0x9A, 3), DolEntry(0x9C, 1), DolEntry(0x9F37, 4),
)
# The fDDA DDOL of qPBOC: 9F37 || 9F02 || 5F2A || 9F69.
FDDA_DDOL_TAGS = (0x9F37, 0x9F02, 0x5F2A, 0x9F69)

# AIP: byte 1 0x20 = DDA supported (fDDA for contactless).
AIP_WITH_ODA = bytes.fromhex("2000")
# AFL: SFI 1 rec 1 (track, name); SFI 2 recs 1-3, rec 1 signed; SFI 3 rec 1 (9F69, per tap).
AFL = bytes.fromhex("08010100" "10010301" "18010100")
FDDA_RECORD = (3, 1)


def dol_bytes(dol: tuple[DolEntry, ...]) -> bytes:
    return b"".join(tlv.encode_tag(t) + bytes((n,)) for t, n in dol)


class CardOda(Protocol):
    """The card's half of offline data authentication (RSA or SM2)."""

    @property
    def name(self) -> str:
        """``fdda-rsa`` or ``fdda-sm2``."""
        ...

    def record_objects(self) -> list[tuple[int, bytes]]:
        """CA index, issuer and ICC certificates (and remainders/exponents) for the records."""
        ...

    def sign_dynamic_data(self, icc_dynamic_data: bytes, ddol_data: bytes) -> bytes:
        """The SDAD (9F4B) over the fDDA input."""
        ...


@dataclass(frozen=True)
class AppImage:
    app: Application
    fci: bytes  # SELECT answer without status word
    records: dict[tuple[int, int], bytes]  # (sfi, record) -> 70 template, FDDA_RECORD excluded
    aip: bytes
    card_key: bytes
    scheme: CryptogramScheme
    iad_template: tuple[int, int]  # (CVN, algorithm indicator)
    oda: CardOda | None
    track2: bytes
    epurse: EpurseImage | None = None  # kind "epurse": its public data and keys


@dataclass(frozen=True)
class CardImage:
    profile: CardProfile
    ppse_fci: bytes
    apps: dict[bytes, AppImage]  # by AID

    @property
    def name(self) -> str:
        return self.profile.name


def _bcd_date(day: dt.date) -> bytes:
    return bytes.fromhex(day.strftime("%y%m%d"))


def track2(profile: CardProfile) -> bytes:
    """57: PAN 'D' YYMM service code 220 (chip, online PIN rules) + discretionary, F-padded."""
    digits = f"{profile.pan}D{profile.expiry.strftime('%y%m')}220" + "0" * 9
    if len(digits) % 2:
        digits += "F"
    return bytes.fromhex(digits)


def _pan_bcd(pan: str) -> bytes:
    return bytes.fromhex(pan + ("F" if len(pan) % 2 else ""))


def _signed_record(profile: CardProfile, aip: bytes) -> bytes:
    objects: list[tuple[int, bytes]] = [
        (0x5A, _pan_bcd(profile.pan)),
        (0x5F24, _bcd_date(profile.expiry)),
        (0x5F25, _bcd_date(profile.effective)),
        (0x5F28, profile.country),
        (0x5F34, bytes.fromhex(profile.psn)),
        (0x9F07, bytes.fromhex("FF00")),
        (0x8C, dol_bytes(CDOL1)),
        (0x9F4A, b"\x82"),  # static data to be authenticated includes the AIP
    ]
    if profile.holder is not None:
        objects.append((0xDF70, profile.holder.category.encode("ascii")))
        if profile.holder.birth_date is not None:
            objects.append((0xDF71, bytes.fromhex(profile.holder.birth_date.strftime("%Y%m%d"))))
    return tlv.encode(objects)


def _epurse_app_image(profile: CardProfile, app: Application, chosen: CryptogramScheme,
                      iad: tuple[int, int]) -> AppImage:
    """An e-purse: no PDOL, records or ODA; its public data (9F0C) in the SELECT answer."""
    algorithm = app.epurse_algorithm or ("sm4" if chosen.name == "sm4" else "tdes")
    image = epurse_image(
        card_number=app.card_number or purse_number_of(profile.pan), start=profile.effective,
        expiry=profile.expiry, algorithm=algorithm, purchase_master_key=app.epurse_key,
        load_master_key=app.load_key, tac_master_key=app.tac_key, key_version=app.key_version,
        max_balance=app.max_balance, city_code=bytes.fromhex(app.issuer_id),
    )
    fci_prop = tlv.encode([(0x50, app.label.encode("ascii")), (0x87, bytes((app.priority,))),
                           (0x9F08, b"\x02"), (0x9F0C, image.public_data.to_bytes())])
    fci = tlv.encode([(0x6F, [(0x84, app.aid), (0xA5, fci_prop)])])
    return AppImage(app=app, fci=fci, records={}, aip=bytes(2), card_key=b"", scheme=chosen,
                    iad_template=iad, oda=None, track2=b"", epurse=image)


def _app_image(profile: CardProfile, app: Application) -> AppImage:
    chosen = scheme(profile.crypto.cryptogram)
    iad = (CVN_SM4, ALGORITHM_SM4) if chosen.name == "sm4" else (CVN_TDES, ALGORITHM_TDES)
    if app.kind == "epurse":
        return _epurse_app_image(profile, app, chosen, iad)
    card_key = chosen.derive_card_key(profile.crypto.issuer_master_key, profile.pan, profile.psn)
    fci_prop: list[tuple[int, bytes]] = [(0x50, app.label.encode("ascii")),
                                         (0x87, bytes((app.priority,))),
                                         (0x9F38, dol_bytes(PDOL)), (0x5F2D, b"zhen")]
    fci = tlv.encode([(0x6F, [(0x84, app.aid), (0xA5, tlv.encode(fci_prop))])])

    aip = AIP_WITH_ODA
    signed = _signed_record(profile, aip)
    static_data = signed + aip  # record value (template excluded) || AIP, as 9F4A says
    oda: CardOda = card_oda(profile, static_data)
    t2 = track2(profile)
    records = {
        (1, 1): tlv.encode([(0x70, [(0x57, t2), (0x5F20, profile.cardholder.encode("ascii"))])]),
        (2, 1): tlv.encode_one(0x70, signed),
    }
    cert_objects = oda.record_objects()
    certs_a = [o for o in cert_objects if o[0] in (0x8F, 0x90, 0x92, 0x9F32)]
    certs_b = [o for o in cert_objects if o[0] not in (0x8F, 0x90, 0x92, 0x9F32)]
    records[(2, 2)] = tlv.encode([(0x70, certs_a)])
    records[(2, 3)] = tlv.encode([(0x70, certs_b)])
    return AppImage(app=app, fci=fci, records=records, aip=aip, card_key=card_key,
                    scheme=chosen, iad_template=iad, oda=oda, track2=t2)


def _ppse(profile: CardProfile) -> bytes:
    entries: list[tlv.TlvSpec] = [
        (0x61, [(0x4F, a.aid), (0x50, a.label.encode("ascii")), (0x87, bytes((a.priority,)))])
        for a in profile.applications
    ]
    proprietary = tlv.encode([(0xBF0C, entries)])
    return tlv.encode([(0x6F, [(0x84, PPSE_NAME), (0xA5, proprietary)])])


@lru_cache(maxsize=64)
def personalise(profile: CardProfile) -> CardImage:
    """The card's fixed data; cached, since certificates cost milliseconds to sign."""
    apps = {a.aid: _app_image(profile, a) for a in profile.applications}
    return CardImage(profile=profile, ppse_fci=_ppse(profile), apps=apps)
