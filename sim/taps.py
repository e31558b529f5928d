"""One card tap at a validator, at either fidelity.

Both fidelities give the validator what it needs: accepted or declined by the kernel (and
why), the latency the rider waits, and, for a QuickPass tap, the data the back office needs
to authorize (ATC, ARQC and the exact bytes it covers, laid out as ``emv.appdata`` says,
which is what the terminal sends).  A validator lists the T-Union e-purse first when the
rider's card has one and the rider pays from it; a purse too short for the fare makes the
kernel fall back to QuickPass (``emv.kernel``).

* :class:`FullTaps` runs the real kernel (and, for the purse, the real purchase with the
  bus's PSAM) against the rider's own virtual card every time.
* :class:`CalibratedTaps` samples the latency measured from the real kernel at start-up and
  takes the class's measured outcome; the card's half of a QuickPass tap (ATC and
  cryptogram) is still computed by the card's real cryptogram scheme (``emv.crypto``), so
  the issuer verifies it exactly as it would a kernel-read one, and the purse balance is
  the card's own.  The card computes its cryptogram for every tap whose cryptogram the core
  will send to the issuer (it says which: ``SimCore.needs_cryptogram``); the others, which
  only count towards an aggregate already verified, carry zeros, since computing a MAC
  nobody reads is a large share of a simulated tap.  Were one ever sent, the issuer would
  decline it as forged and the report would show a ``forged_cryptogram`` alert.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from emv import tlv
from emv.appdata import (
    AC_TERMINAL_TAGS,
    CID_ARQC,
    AppDataError,
    IssuerApplicationData,
    ac_input,
    amount_bcd,
)
from emv.card.image import personalise
from emv.card.profile import CardProfile
from emv.crypto.cryptogram import CryptogramScheme, scheme
from emv.epurse.issuers import TEST_ISSUERS
from emv.epurse.keys import ALGORITHM_IDS
from emv.epurse.psam import TEST_PURCHASE_KEYS, Psam
from emv.kernel import T_UNION_EPURSE, UNIONPAY_DEBIT, TapResult, TerminalConfig
from emv.tlv import TlvError
from sim.coreapi import SimCard
from sim.draws import BlockDraws, Draw
from sim.latency import (
    ACCEPTED,
    ClassCalibration,
    FullKernel,
    PhysicalModel,
    TimedTap,
    card_profile,
    class_draw,
    law_of,
    terminal_config,
)
from sim.randoms import Uniforms

UNVERIFIED = bytes(8)  # the cryptogram of a calibrated tap nobody verifies (see CalibratedTaps)


@dataclass(slots=True)
class CardTap:
    """A QuickPass tap (``epurse`` False) or an e-purse purchase (``epurse`` True)."""

    accepted: bool  # by the kernel (the validator's rules come after, in the model)
    reason: str | None
    latency: float
    result: TapResult  # what the kernel returned (calibrated: the class's measured result)
    epurse: bool = False
    atc: int = 0
    arqc: bytes = b""
    ac_data: bytes = b""
    balance_after: int = 0


class TapSource(Protocol):
    fidelity: str

    def personalised(self, card: int, key: bytes) -> None:
        """The card's cryptogram key, as the issuer's personalisation loaded it."""
        ...

    def quickpass(self, card: SimCard, atc: int, amount: int, at: dt.datetime,
                  u: Uniforms, cryptogram: bool = True) -> CardTap:
        """A tap on a QuickPass-first validator (``cryptogram`` False: nobody will verify
        this tap's cryptogram, so a calibrated card may leave it zero)."""
        ...

    def epurse(self, card: SimCard, atc: int, fare: int, balance: int, at: dt.datetime,
               bus: int, u: Uniforms, cryptogram: bool = True) -> CardTap:
        """A tap on an e-purse-first validator, the purse holding ``balance``, the fare
        ``fare`` (a short purse falls back to QuickPass: ``epurse`` False in the answer)."""
        ...


def _host_draw(c: ClassCalibration, rng: np.random.Generator, model: PhysicalModel) -> Draw:
    host = c.host_seconds * model.terminal_cpu_factor
    return lambda n: host[rng.integers(0, len(host), size=n)]


def _lost_draw(c: ClassCalibration, rng: np.random.Generator, model: PhysicalModel) -> Draw:
    return lambda n: model.retransmissions(rng, c.commands, n)


_TERMINAL_PREFIX: dict[tuple[int, dt.date], bytes] = {}


def terminal_values(amount: int, day: dt.date, un: bytes) -> dict[int, bytes]:
    """The terminal's PDOL values a card MACs (as ``emv.kernel`` fills them for a tap)."""
    return {
        0x9F02: amount_bcd(amount), 0x9F03: amount_bcd(0), 0x9F1A: bytes.fromhex("0156"),
        0x95: bytes(5), 0x5F2A: bytes.fromhex("0156"),
        0x9A: bytes.fromhex(day.strftime("%y%m%d")), 0x9C: b"\x00", 0x9F37: un,
    }


def terminal_data(amount: int, day: dt.date, un: bytes) -> bytes:
    """The terminal part of the AC input (``emv.appdata.AC_TERMINAL_TAGS`` in order); all
    but the unpredictable number is the same for a day's taps of one amount, so kept."""
    prefix = _TERMINAL_PREFIX.get((amount, day))
    if prefix is None:
        values = terminal_values(amount, day, bytes(4))
        prefix = b"".join(values[t] for t in AC_TERMINAL_TAGS[:-1])
        _TERMINAL_PREFIX[(amount, day)] = prefix
    return prefix + un


def class_of(card: SimCard, day: dt.date) -> str:
    return f"{card.kind}/expired" if card.expiry < day else card.kind


class CalibratedTaps:
    """Latency and outcome from the start-up calibration; cryptogram from the card's scheme."""

    fidelity = "calibrated"

    def __init__(self, classes: Mapping[str, ClassCalibration], profiles: Mapping[str,
                 CardProfile], model: PhysicalModel, rng: np.random.Generator,
                 day: dt.date) -> None:
        self.classes = dict(classes)
        self._samplers = {k: BlockDraws(class_draw(k, c, classes, rng, model))
                          for k, c in classes.items()}
        self.day = day
        self._aip = {kind: personalise(p).apps[UNIONPAY_DEBIT].aip
                     for kind, p in profiles.items()}
        self._cvr = {name: bytes((0x03, (c.cid if c.cid is not None else CID_ARQC) | 0x20, 0, 0))
                     for name, c in classes.items()}
        self._results = {name: TapResult(outcome=c.outcome, reason=c.reason, oda=c.oda,
                                         oda_ok=(c.oda != "none") if c.accepted else None)
                         for name, c in classes.items()}
        self._keys: dict[int, bytes] = {}
        self._schemes: dict[str, CryptogramScheme] = {}
        self.skipped = 0  # taps whose cryptogram nobody was going to verify

    def personalised(self, card: int, key: bytes) -> None:
        self._keys[card] = key

    def quickpass(self, card: SimCard, atc: int, amount: int, at: dt.datetime,
                  u: Uniforms, cryptogram: bool = True) -> CardTap:
        name = class_of(card, self.day)
        return self._quickpass(name, name, card, atc, amount, at, u, cryptogram)

    def _quickpass(self, timing: str, name: str, card: SimCard, atc: int, amount: int,
                   at: dt.datetime, u: Uniforms, cryptogram: bool) -> CardTap:
        cal = self.classes[name]
        latency = self._samplers[timing].next()
        result = self._results[name]
        if cal.outcome not in ACCEPTED:
            return CardTap(False, cal.reason or cal.outcome.value, latency, result, atc=atc)
        un = int(u.u() * 2**32).to_bytes(4, "big")
        data = ac_input(terminal_data(amount, at.date(), un), self._aip[card.kind], atc,
                        self._cvr[name])
        if not cryptogram:
            self.skipped += 1
            return CardTap(True, None, latency, result, atc=atc, arqc=UNVERIFIED, ac_data=data)
        suite = self._schemes.get(card.scheme)
        if suite is None:
            suite = self._schemes[card.scheme] = scheme(card.scheme)
        key = self._keys.get(card.index)
        if key is None:  # a card the issuer never personalised: derive it as a bureau would
            key = self._keys[card.index] = suite.derive_card_key(
                card.issuer_master_key, card.pan, card.psn)
        arqc = suite.generate_ac(suite.derive_session_key(key, atc), data)
        return CardTap(True, None, latency, result, atc=atc, arqc=arqc, ac_data=data)

    def epurse(self, card: SimCard, atc: int, fare: int, balance: int, at: dt.datetime,
               bus: int, u: Uniforms, cryptogram: bool = True) -> CardTap:
        name = class_of(card, self.day)
        if name != card.kind:  # expired: the kernel declines it whichever application
            return self._quickpass(name, name, card, atc, fare, at, u, cryptogram)
        if balance >= fare:
            purse = f"{card.kind}/epurse"
            return CardTap(True, None, self._samplers[purse].next(), self._results[purse],
                           epurse=True, balance_after=balance - fare)
        return self._quickpass(f"{card.kind}/epurse-short", card.kind, card, atc, fare, at, u,
                               cryptogram)


class FullTaps:
    """The real kernel against each rider's own virtual card, every tap.

    Outcome, cryptogram, purse balance and the APDUs exchanged (which set the radio and chip
    time) come from this tap's run.  The kernel's CPU time is measured for every tap and
    reported, but the simulated clock takes it from the calibration's host-time distribution,
    so that a seed still gives one result (a live CPU timing never repeats to the microsecond).
    """

    fidelity = "full"

    def __init__(self, token_key: bytes, classes: Mapping[str, ClassCalibration],
                 profiles: Mapping[str, CardProfile], model: PhysicalModel,
                 rng: np.random.Generator, day: dt.date) -> None:
        self.config = terminal_config(token_key)
        self.epurse_config: TerminalConfig = terminal_config(token_key, epurse=True)
        self.kernel = FullKernel(self.config, day)
        self.profiles = profiles
        self.model = model
        self.day = day
        self._host = {k: BlockDraws(_host_draw(c, rng, model)) for k, c in classes.items()}
        self._lost = {k: BlockDraws(_lost_draw(c, rng, model)) for k, c in classes.items()}
        # A class whose path has the field's law takes its latency from there, as calibrated
        # taps do; the kernel's run still decides outcome, cryptogram and balance.
        self._field = {k: BlockDraws(class_draw(k, c, classes, rng, model))
                       for k, c in classes.items() if law_of(c, model) == "field"}
        self._psams: dict[int, Psam] = {}

    def personalised(self, card: int, key: bytes) -> None:
        """Each virtual card is personalised from its profile (keys derived there)."""

    def psam(self, bus: int) -> Psam:
        """The PSAM in bus ``bus``'s validator (its own terminal number and serial)."""
        psam = self._psams.get(bus)
        if psam is None:
            psam = self._psams[bus] = Psam(bytes.fromhex(f"31{bus:010d}"), TEST_PURCHASE_KEYS,
                                           issuer_keys=TEST_ISSUERS.purchase_keys())
        return psam

    def _run(self, card: SimCard, amount: int, balance: int, at: dt.datetime, u: Uniforms,
             bus: int | None) -> tuple[TimedTap, float]:
        base = self.profiles[card.kind]
        if card.purse_issuer != "0000":
            base = purse_of_issuer(base, card.purse_issuer)
        profile = card_profile(base, card.pan, expiry=card.expiry, category=card.category)
        vcard = self.kernel.card(card.index, profile, balance)
        un = int(u.u() * 2**32).to_bytes(4, "big")
        if bus is None:
            timed = self.kernel.tap(vcard, amount, un, at)
        else:
            timed = self.kernel.tap(vcard, amount, un, at, self.epurse_config, self.psam(bus))
        name = class_of(card, self.day)
        if timed.result.epurse_tac is not None:
            name = f"{card.kind}/epurse"
        field = self._field.get(name)
        if field is not None:
            return timed, field.next()
        latency = timed.off_host(self.model) + self._host[name].next() + self._lost[name].next()
        return timed, latency

    def quickpass(self, card: SimCard, atc: int, amount: int, at: dt.datetime,
                  u: Uniforms, cryptogram: bool = True) -> CardTap:
        timed, latency = self._run(card, amount, 0, at, u, None)
        return _from_result(timed, latency, atc)

    def epurse(self, card: SimCard, atc: int, fare: int, balance: int, at: dt.datetime,
               bus: int, u: Uniforms, cryptogram: bool = True) -> CardTap:
        timed, latency = self._run(card, fare, balance, at, u, bus)
        return _from_result(timed, latency, atc)


_OTHER_PROFILES: dict[tuple[str, str], CardProfile] = {}


def purse_of_issuer(profile: CardProfile, issuer_id: str) -> CardProfile:
    """``profile`` whose T-Union purse another TEST city issued: the purse's issuer id and
    its purchase, TAC and load keys are that city's (``emv.epurse.issuers``), so the PSAM
    picks that city's key and only that city's clearing verifies the TAC; the card number
    stays the one made from the rider's PAN (one per card)."""
    key = (profile.name, issuer_id)
    hit = _OTHER_PROFILES.get(key)
    if hit is not None:
        return hit
    issuer = TEST_ISSUERS.get(issuer_id)
    if issuer is None:
        raise ValueError(f"no TEST T-Union issuer {issuer_id}")
    apps = []
    for app in profile.applications:
        if app.aid == T_UNION_EPURSE:
            algorithm = app.epurse_algorithm or (
                "sm4" if profile.crypto.cryptogram == "sm4" else "tdes")  # as emv.card.image
            slot = (app.key_version, ALGORITHM_IDS[algorithm])
            apps.append(dataclasses.replace(app, issuer_id=issuer_id,
                                            epurse_key=bytes(issuer.purchase_keys[slot]),
                                            tac_key=bytes(issuer.tac_keys[slot]),
                                            load_key=bytes(issuer.load_keys[slot])))
        else:
            apps.append(app)
    out = _OTHER_PROFILES[key] = dataclasses.replace(profile, applications=tuple(apps))
    return out


def _from_result(timed: TimedTap, latency: float, atc: int) -> CardTap:
    result = timed.result
    if result.outcome not in ACCEPTED:
        return CardTap(False, result.reason or result.outcome.value, latency, result,
                       atc=result.atc or atc)
    if result.aid == T_UNION_EPURSE.hex().upper():
        return CardTap(True, None, latency, result, epurse=True,
                       balance_after=result.epurse_balance_after or 0)
    if result.atc is None or result.cryptogram is None:
        return CardTap(False, result.reason or "no-cryptogram", latency, result, atc=atc)
    return CardTap(True, None, latency, result, atc=result.atc,
                   arqc=bytes.fromhex(result.cryptogram),
                   ac_data=full_ac_input(result, timed.gpo))


def full_ac_input(result: TapResult, gpo: bytes | None) -> bytes:
    """What the card MACed, rebuilt from the kernel's result as the terminal does it."""
    assert result.atc is not None
    terminal = b"".join(bytes.fromhex(result.ac_data[tlv.tag_hex(t)]) for t in AC_TERMINAL_TAGS
                        if tlv.tag_hex(t) in result.ac_data)
    aip = b"\x00\x00"
    if gpo is not None:
        try:
            found = tlv.flatten(tlv.decode(gpo[:-2])).get(0x82)
        except TlvError:
            found = None
        if found is not None and len(found) == 2:
            aip = found
    try:
        cvr = IssuerApplicationData.parse(bytes.fromhex(result.iad or "")).cvr
    except (AppDataError, ValueError):
        cvr = b""
    return ac_input(terminal, aip, result.atc, cvr)
