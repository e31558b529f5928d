"""One card tap at a validator, at either fidelity.

Both give what the validator needs: accepted or declined by the kernel (and why), the
latency the rider waits, and the data the back office needs to authorize (ATC, ARQC and the
exact bytes it covers, laid out as ``emv.appdata`` says, which is what the terminal sends).

* :class:`FullTaps` runs the real kernel against the rider's own virtual card every time.
* :class:`CalibratedTaps` samples the latency measured from the real kernel at start-up and
  takes the class's measured outcome; the card's half of the tap (ATC and cryptogram) is
  still computed by the card's real cryptogram scheme (``emv.crypto``), so the issuer
  verifies it exactly as it would a kernel-read one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

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
from emv.kernel import UNIONPAY_DEBIT, Outcome, TerminalConfig
from emv.tlv import TlvError
from sim.coreapi import SimCard
from sim.latency import (
    ACCEPTED,
    ClassCalibration,
    FullKernel,
    PhysicalModel,
    TimedTap,
    card_profile,
)
from sim.randoms import Uniforms


@dataclass(slots=True)
class CardTap:
    accepted: bool
    reason: str | None
    latency: float
    atc: int
    arqc: bytes
    ac_data: bytes


class TapSource(Protocol):
    fidelity: str

    def tap(self, card: SimCard, atc: int, amount: int, u: Uniforms) -> CardTap: ...

    def epurse_latency(self, card: SimCard, u: Uniforms) -> float: ...


class _Sampler:
    """Draws of one class's latency (or host time), made with numpy 4096 at a time."""

    __slots__ = ("_buf", "_draw", "_i")

    def __init__(self, draw: Callable[[int], NDArray[np.float64]]) -> None:
        self._draw = draw
        self._buf: list[float] = []
        self._i = 0

    def next(self) -> float:
        if self._i >= len(self._buf):
            self._buf = self._draw(4096).tolist()
            self._i = 0
        v = self._buf[self._i]
        self._i += 1
        return v


Draw = Callable[[int], NDArray[np.float64]]


def _latency_draw(c: ClassCalibration, rng: np.random.Generator, model: PhysicalModel) -> Draw:
    return lambda n: c.sample(rng, model, n)


def _host_draw(c: ClassCalibration, rng: np.random.Generator, model: PhysicalModel) -> Draw:
    host = c.host_seconds * model.terminal_cpu_factor
    return lambda n: host[rng.integers(0, len(host), size=n)]


def _lost_draw(c: ClassCalibration, rng: np.random.Generator, model: PhysicalModel) -> Draw:
    return lambda n: model.retransmissions(rng, c.commands, n)


def terminal_values(amount: int, day: dt.date, un: bytes, tvr: bytes = bytes(5)) -> dict[int,
                                                                                           bytes]:
    """The terminal's PDOL values a card MACs (as ``emv.kernel`` fills them for a tap)."""
    return {
        0x9F02: amount_bcd(amount), 0x9F03: amount_bcd(0), 0x9F1A: bytes.fromhex("0156"),
        0x95: tvr, 0x5F2A: bytes.fromhex("0156"), 0x9A: bytes.fromhex(day.strftime("%y%m%d")),
        0x9C: b"\x00", 0x9F37: un,
    }


class CalibratedTaps:
    """Latency and outcome from the start-up calibration; cryptogram from the card's scheme."""

    fidelity = "calibrated"

    def __init__(self, classes: Mapping[str, ClassCalibration], profiles: Mapping[str,
                 CardProfile], model: PhysicalModel, rng: np.random.Generator,
                 day: dt.date) -> None:
        self.classes = dict(classes)
        self._samplers = {k: _Sampler(_latency_draw(c, rng, model)) for k, c in classes.items()}
        self.day = day
        self._aip = {kind: personalise(p).apps[UNIONPAY_DEBIT].aip
                     for kind, p in profiles.items()}
        self._cvr = {name: bytes((0x03, (c.cid if c.cid is not None else CID_ARQC) | 0x20, 0, 0))
                     for name, c in classes.items()}
        self._keys: dict[int, bytes] = {}
        self._schemes: dict[str, CryptogramScheme] = {}

    @staticmethod
    def class_of(card: SimCard, day: dt.date) -> str:
        return f"{card.kind}/expired" if card.expiry < day else card.kind

    def epurse_latency(self, card: SimCard, u: Uniforms) -> float:
        name = f"{card.kind}/epurse"
        if name not in self._samplers:
            name = self.class_of(card, self.day)
        return self._samplers[name].next()

    def tap(self, card: SimCard, atc: int, amount: int, u: Uniforms) -> CardTap:
        name = self.class_of(card, self.day)
        cal = self.classes[name]
        latency = self._samplers[name].next()
        if cal.outcome not in ACCEPTED:
            return CardTap(False, cal.reason or cal.outcome.value, latency, atc, b"", b"")
        suite = self._schemes.get(card.scheme)
        if suite is None:
            suite = self._schemes[card.scheme] = scheme(card.scheme)
        key = self._keys.get(card.index)
        if key is None:
            key = self._keys[card.index] = suite.derive_card_key(
                card.issuer_master_key, card.pan, card.psn)
        un = int(u.u() * 2**32).to_bytes(4, "big")
        values = terminal_values(amount, self.day, un)
        data = ac_input(b"".join(values[t] for t in AC_TERMINAL_TAGS), self._aip[card.kind],
                        atc, self._cvr[name])
        arqc = suite.generate_ac(suite.derive_session_key(key, atc), data)
        return CardTap(True, None, latency, atc, arqc, data)


class FullTaps:
    """The real kernel against each rider's own virtual card, every tap.

    Outcome, cryptogram and the APDUs exchanged (which set the radio and chip time) come
    from this tap's run.  The kernel's CPU time is measured for every tap and reported, but
    the simulated clock takes it from the calibration's host-time distribution, so that a
    seed still gives one result (a live CPU timing never repeats to the microsecond).
    """

    fidelity = "full"

    def __init__(self, config: TerminalConfig, classes: Mapping[str, ClassCalibration],
                 profiles: Mapping[str, CardProfile], model: PhysicalModel,
                 rng: np.random.Generator, day: dt.date) -> None:
        self.kernel = FullKernel(config, day)
        self.profiles = profiles
        self.model = model
        self.day = day
        self._host = {k: _Sampler(_host_draw(c, rng, model)) for k, c in classes.items()}
        self._lost = {k: _Sampler(_lost_draw(c, rng, model)) for k, c in classes.items()}

    def _run(self, card: SimCard, amount: int, u: Uniforms) -> tuple[TimedTap, float]:
        profile = card_profile(self.profiles[card.kind], card.pan, expiry=card.expiry,
                               category=card.category)
        un = int(u.u() * 2**32).to_bytes(4, "big")
        timed = self.kernel.tap(card.index, profile, amount, un)
        name = CalibratedTaps.class_of(card, self.day)
        latency = timed.off_host(self.model) + self._host[name].next() + self._lost[name].next()
        return timed, latency

    def tap(self, card: SimCard, atc: int, amount: int, u: Uniforms) -> CardTap:
        timed, latency = self._run(card, amount, u)
        result = timed.result
        if result.outcome not in ACCEPTED or result.atc is None or result.cryptogram is None:
            return CardTap(False, result.reason or result.outcome.value, latency,
                           result.atc or atc, b"", b"")
        return CardTap(True, None, latency, result.atc, bytes.fromhex(result.cryptogram),
                       full_ac_input(result.ac_data, timed.gpo, result.atc, result.iad))

    def epurse_latency(self, card: SimCard, u: Uniforms) -> float:
        """The e-purse purchase is not in the kernel yet: the card's QuickPass tap stands in."""
        return self._run(card, 0, u)[1]


def full_ac_input(ac_data: Mapping[str, str], gpo: bytes | None, atc: int,
                  iad_hex: str | None) -> bytes:
    """What the card MACed, rebuilt from the kernel's result as the terminal does it."""
    terminal = b"".join(bytes.fromhex(ac_data[tlv.tag_hex(t)]) for t in AC_TERMINAL_TAGS
                        if tlv.tag_hex(t) in ac_data)
    aip = b"\x00\x00"
    if gpo is not None:
        try:
            found = tlv.flatten(tlv.decode(gpo[:-2])).get(0x82)
        except TlvError:
            found = None
        if found is not None and len(found) == 2:
            aip = found
    try:
        cvr = IssuerApplicationData.parse(bytes.fromhex(iad_hex or "")).cvr
    except (AppDataError, ValueError):
        cvr = b""
    return ac_input(terminal, aip, atc, cvr)


def outcome_accepted(outcome: Outcome) -> bool:
    return outcome in ACCEPTED
