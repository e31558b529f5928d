"""Taps with real cryptograms: a virtual card's own answer to GET PROCESSING OPTIONS.

The load generator needs thousands of taps a second, and the full kernel (fDDA signature
checks, record reads) costs about a millisecond each; the issuer only looks at the
cryptogram.  So a tap here is the two commands that make one: SELECT the card's QuickPass
application and GPO with the PDOL data a transit reader sends (qPBOC, online cryptogram
required, no ODA for online, so the card signs nothing).  The card increments its ATC and
computes the ARQC over the terminal data with its own key, exactly as in a full tap
(``emv.card.card``); the answer's tags become field 55.
"""

from __future__ import annotations

import dataclasses
from datetime import date

from emv import tlv
from emv.apdu import ResponseApdu, get_processing_options, select
from emv.card.card import VirtualCard
from emv.card.image import PDOL, personalise
from emv.card.profile import CardProfile
from emv.card.state import CardState
from emv.dol import build_dol
from emv.pan import with_luhn_digit
from emv.qualifiers import TTQ_ONLINE_CRYPTOGRAM_REQUIRED, TTQ_QPBOC, with_bits

MAX_CARDS_PER_PROFILE = 9999


class TapError(ValueError):
    """A card that cannot make a tap here (no QuickPass application, a refusal)."""


def card_pans(pan: str, n: int) -> list[str]:
    """``n`` TEST PANs of one profile: its own, then digits 11-14 of the body set to 1, 2, ...
    (so two profiles whose PANs differ elsewhere never share one)."""
    if not 1 <= n <= MAX_CARDS_PER_PROFILE or len(pan) < 16:
        raise TapError(f"1 to {MAX_CARDS_PER_PROFILE} cards per profile of a PAN of 16-19 digits")
    body = pan[:-1]
    return [pan] + [with_luhn_digit(f"{body[:10]}{k:04d}{body[14:]}") for k in range(1, n)]


def profile_cards(profile: CardProfile, n: int) -> list[CardProfile]:
    """The profile as ``n`` cards (:func:`card_pans`): same keys, another card number."""
    return [dataclasses.replace(profile, pan=p) for p in card_pans(profile.pan, n)]


class CardTapper:
    """One virtual card, tapped again and again (its ATC rises by one a tap)."""

    def __init__(self, profile: CardProfile, *, atc_from: int = 0) -> None:
        apps = [a for a in profile.applications if a.kind != "epurse"]
        if not apps:
            raise TapError(f"card {profile.name}: no QuickPass (debit) application")
        self.profile = profile
        self.aid = apps[0].aid
        state = CardState()
        state.app(self.aid).atc = atc_from
        self.card = VirtualCard(personalise(profile), state)
        self.sm = profile.crypto.cryptogram == "sm4" or profile.crypto.suite == "sm2"
        self._ttq = with_bits(bytes(4), TTQ_QPBOC, TTQ_ONLINE_CRYPTOGRAM_REQUIRED)

    @property
    def atc(self) -> int:
        return self.card.state.app(self.aid).atc

    def tap(self, *, amount: int, currency: str, country: str, day: date,
            unpredictable: bytes) -> dict[int, bytes]:
        """The field-55 values of one tap (cryptogram, ATC, IAD, AIP, terminal data).

        ``currency`` and ``country`` are ISO numeric codes ("156")."""
        terminal = {
            0x9F66: self._ttq,
            0x9F02: bytes.fromhex(f"{amount:012d}"),
            0x9F03: bytes(6),
            0x9F1A: bytes.fromhex(country.rjust(4, "0")),
            0x95: bytes(5),
            0x5F2A: bytes.fromhex(currency.rjust(4, "0")),
            0x9A: bytes.fromhex(day.strftime("%y%m%d")),
            0x9C: b"\x00",
            0x9F37: unpredictable,
            0xDF69: b"\x01" if self.sm else b"\x00",
        }
        self._send(select(self.aid).to_bytes(), "SELECT")
        answer = self._send(get_processing_options(build_dol(list(PDOL), terminal)).to_bytes(),
                            "GET PROCESSING OPTIONS")
        card = tlv.flatten(tlv.decode(answer))
        values = {t: v for t, v in terminal.items() if t not in (0x9F66, 0xDF69)}
        for t in (0x9F26, 0x9F27, 0x9F10, 0x9F36, 0x82):
            if t not in card:
                raise TapError(f"card {self.profile.name}: GPO answer without tag {t:X}")
            values[t] = card[t]
        return values

    def _send(self, command: bytes, what: str) -> bytes:
        r = ResponseApdu.parse(self.card.process(command))
        if not r.ok:
            raise TapError(f"card {self.profile.name}: {what} answered {r.sw:04X}")
        return r.data
