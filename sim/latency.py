"""Tap latency at the validator, from the real kernel.

A tap's latency is what the rider waits at the reader:

* the kernel's own work (``emv.kernel``, real code), timed on this machine and scaled by
  ``terminal_cpu_factor`` for a validator's CPU;
* the radio: every command and response APDU the real kernel and the real virtual card
  exchanged, at ISO/IEC 14443's 106 kbit/s with frame overhead and turnaround, plus card
  activation (polling, anticollision, RATS) and lost frames sent again;
* the card chip: a time per command, the cryptogram, and the fDDA signature of the suite the
  card used.  The virtual card's time on this CPU says nothing about a card chip, so it is
  replaced by this model (figures in :class:`PhysicalModel`, all configurable).

Calibration runs ``samples`` real taps per card class and keeps, per class, the kernel's
outcome, the APDUs it exchanged and the host CPU time of each tap.  Host times are noise of
this machine, so a calibration is kept on disk (``sim.calibration``) and reused: the same
seed then gives the same run, to the last digit.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from emv.capk import load_ca_keys_cached
from emv.card.card import VirtualCard
from emv.card.image import personalise
from emv.card.profile import CardProfile, Holder
from emv.epurse.psam import Psam
from emv.kernel import (
    EPURSE_FIRST,
    T_UNION_EPURSE,
    Kernel,
    Outcome,
    Send,
    TapResult,
    TerminalConfig,
    TransactionInput,
)
from emv.oda import builtin_test_ca_keys
from emv.pan import with_luhn_digit
from sim.errors import ConfigError

ACCEPTED = frozenset({Outcome.APPROVED_OFFLINE, Outcome.ONLINE_REQUEST})
GPO_INS = 0xA8


@dataclass(frozen=True, slots=True)
class LatencyMode:
    """One mode of the field's tap-latency mixture: a shifted lognormal, in milliseconds.

    A draw is ``shift_ms + median_ms * exp(sigma * Z)`` (Z standard normal): nothing below
    ``shift_ms``, half of the mode's taps below ``shift_ms + median_ms``, a right tail whose
    length ``sigma`` sets.  Its peak is at ``shift_ms + median_ms * exp(-sigma**2)``."""

    weight: float
    shift_ms: float
    median_ms: float
    sigma: float

    def __post_init__(self) -> None:
        if not self.weight > 0:
            raise ConfigError("tap_latency.field: weight must be positive")
        if self.shift_ms < 0 or not self.median_ms > 0:
            raise ConfigError("tap_latency.field: shift_ms must not be negative and median_ms "
                              "must be positive")
        if not 0 < self.sigma <= 3:
            raise ConfigError("tap_latency.field: sigma must be in (0, 3]")

    @property
    def peak_ms(self) -> float:
        return self.shift_ms + self.median_ms * math.exp(-self.sigma ** 2)

    @property
    def mean_ms(self) -> float:
        return self.shift_ms + self.median_ms * math.exp(self.sigma ** 2 / 2)


# TfL's contactless EMV taps on London buses, as Consult Hyperion reported them (mean ~530 ms,
# main peak 545 ms, smaller peaks at 420 and 490 ms, a long tail beyond 900 ms: see
# sim/README.md, "Calibration"), fitted as a mixture of four shifted lognormals (the fit, its
# targets and what it gives are in the README; tests/test_sim_calibration.py checks them).
TFL_BUS_2013: tuple[LatencyMode, ...] = (
    LatencyMode(weight=0.16, shift_ms=340.0, median_ms=83.0, sigma=0.2),  # fast cards: 420 ms
    LatencyMode(weight=0.20, shift_ms=400.0, median_ms=94.0, sigma=0.2),  # 490 ms peak
    LatencyMode(weight=0.61, shift_ms=460.0, median_ms=95.0, sigma=0.3),  # the main peak, 545
    LatencyMode(weight=0.03, shift_ms=450.0, median_ms=293.0, sigma=0.4),  # slow cards: tail
)

LATENCY_LAWS = ("kernel", "field")


def field_sample(modes: tuple[LatencyMode, ...], rng: np.random.Generator,
                 n: int) -> NDArray[np.float64]:
    """``n`` draws (seconds) from the mixture ``modes``, vectorised: one uniform picks each
    draw's mode, one normal its value."""
    weights = np.array([m.weight for m in modes])
    cum = np.cumsum(weights / weights.sum())
    cum[-1] = 1.0
    pick = np.searchsorted(cum, rng.random(n), side="right")
    shift = np.array([m.shift_ms for m in modes])[pick]
    median = np.array([m.median_ms for m in modes])[pick]
    sigma = np.array([m.sigma for m in modes])[pick]
    out: NDArray[np.float64] = (shift + median * np.exp(sigma * rng.standard_normal(n))) * 1e-3
    return out


@dataclass(frozen=True, slots=True)
class PhysicalModel:
    """What the kernel's host time leaves out: radio and card chip (seconds); and, per payment
    path, whether a tap's latency is that kernel model's (``"kernel"``) or a draw from the
    field's measured distribution (``"field"``: the mixture ``field``, plus what the kernel
    says a purse-short fallback adds over a plain QuickPass tap)."""

    bitrate: float = 106_000.0  # ISO/IEC 14443 base rate, bit/s
    bits_per_byte: float = 9.0  # 8 data bits + parity (type A)
    frame_overhead: int = 3  # bytes per I-block: PCB + CRC
    turnaround: float = 0.0006  # frame delay time + guard time per exchange
    activation: float = 0.012  # polling, anticollision, RATS/ATS
    chip_per_command: float = 0.004  # card OS time per APDU
    chip_cryptogram: float = 0.006  # the application cryptogram (3DES or SM4)
    chip_sign_rsa: float = 0.060  # fDDA: RSA-1024 signature on a card chip
    chip_sign_sm2: float = 0.045  # fDDA: SM2 signature on a card chip
    psam_purchase: float = 0.030  # e-purse: the PSAM's MAC1 and MAC2 (two APDUs, ISO 7816)
    terminal_cpu_factor: float = 1.0  # validator CPU time / this machine's
    retransmit_p: float = 0.03  # chance an exchange's frame is lost and sent again
    retransmit_cost: float = 0.0048  # s: frame waiting time (FWI 4) before the resend
    quickpass: str = "field"  # latency law of taps on the QuickPass path (and fallbacks)
    epurse: str = "kernel"  # of T-Union e-purse purchases (no field figure found: kernel)
    field: tuple[LatencyMode, ...] = TFL_BUS_2013

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float | int) and value < 0:
                raise ConfigError(f"latency.{f.name} must not be negative")
        for path in ("quickpass", "epurse"):
            if getattr(self, path) not in LATENCY_LAWS:
                raise ConfigError(f"tap_latency.{path} must be one of {', '.join(LATENCY_LAWS)}, "
                                  f"not {getattr(self, path)!r}")
        if "field" in (self.quickpass, self.epurse) and not self.field:
            raise ConfigError("tap_latency.field: a field law needs at least one mode")
        if self.bitrate <= 0:
            raise ConfigError("latency.bitrate must be positive")
        if self.retransmit_p > 1:
            raise ConfigError("latency.retransmit_p is a probability (0..1)")

    def off_host(self, commands: int, wire_bytes: int, oda: str, cryptogram: bool,
                 epurse: bool = False) -> float:
        """Radio and chip time of a tap that exchanged ``commands`` APDUs (``cryptogram``:
        the card made an application cryptogram; ``epurse``: an e-purse purchase, whose
        MAC2/TAC the card and MAC1/MAC2 the PSAM compute)."""
        t = self.activation + commands * (self.turnaround + self.chip_per_command)
        t += (wire_bytes + 2 * commands * self.frame_overhead) * self.bits_per_byte / self.bitrate
        if cryptogram or epurse:
            t += self.chip_cryptogram
        if epurse:
            t += self.psam_purchase
        if oda == "fdda-rsa":
            t += self.chip_sign_rsa
        elif oda == "fdda-sm2":
            t += self.chip_sign_sm2
        return t

    def retransmissions(self, rng: np.random.Generator, commands: int,
                        n: int) -> NDArray[np.float64]:
        """Extra seconds of ``n`` taps from lost frames (binomial per tap)."""
        if self.retransmit_p <= 0 or commands <= 0:
            return np.zeros(n)
        lost: NDArray[np.float64] = rng.binomial(commands, self.retransmit_p, size=n).astype(
            np.float64)
        return lost * self.retransmit_cost


@dataclass(frozen=True, slots=True)
class TimedTap:
    result: TapResult
    terminal_seconds: float  # the kernel's host time
    commands: int
    wire_bytes: int
    gpo: bytes | None = None  # the card's answer to GET PROCESSING OPTIONS (holds the AIP)

    def off_host(self, model: PhysicalModel) -> float:
        return model.off_host(self.commands, self.wire_bytes, self.result.oda,
                              self.result.cryptogram is not None,
                              self.result.epurse_tac is not None)


def timed_tap(config: TerminalConfig, card: VirtualCard, txn: TransactionInput,
              psam: Psam | None = None) -> TimedTap:
    """One real tap; the kernel's time is measured apart from the card's."""
    clock = time.perf_counter
    card.power_on()
    t0 = clock()
    kernel = Kernel(config, txn, psam)
    step = kernel.start()
    terminal = clock() - t0
    commands = 0
    wire = 0
    gpo = None
    while isinstance(step, Send):
        response = card.process(step.apdu)
        if len(step.apdu) > 1 and step.apdu[1] == GPO_INS:
            gpo = response
        commands += 1
        wire += len(step.apdu) + len(response)
        t1 = clock()
        step = kernel.receive(response)
        terminal += clock() - t1
    return TimedTap(step.result, terminal, commands, wire, gpo)


def card_pan(prefix: str, shard: int, index: int) -> str:
    """A valid (Luhn) 19-digit PAN for simulated card ``index`` of ``shard``."""
    head = f"{prefix[:8]}{shard % 100:02d}"
    if len(head) != 10 or not 0 <= index < 100_000_000:
        return with_luhn_digit(f"{head}{index:08d}")
    # The same check digit as emv.pan.with_luhn_digit, summed from a table of 4-digit
    # groups: a PAN is made for every card on its first tap.
    known = _HEADS.get(head)
    if known is None:
        known = _HEADS[head] = _luhn_doubled_first(head + "00000000")
    low, high = index % 10_000, index // 10_000
    total = known + _LUHN4[low] + _LUHN4[high]
    return f"{head}{index:08d}{(10 - total % 10) % 10}"


def _luhn_doubled_first(body: str) -> int:
    """The Luhn sum of a PAN body (its check digit still to come: the last digit doubles)."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total


# Luhn sums of every 4-digit group standing at an even distance from the check digit.
_LUHN4 = [_luhn_doubled_first(f"{n:04d}") for n in range(10_000)]
_HEADS: dict[str, int] = {}


def card_profile(base: CardProfile, pan: str, *, expiry: dt.date | None = None,
                 category: str | None = None) -> CardProfile:
    """``base`` with this rider's PAN, expiry and holder category."""
    holder = base.holder
    if category is not None and base.holder is not None:
        holder = Holder(category, base.holder.birth_date)
    exp = expiry if expiry is not None else base.expiry
    effective = min(base.effective, exp)
    return dataclasses.replace(base, pan=pan, expiry=exp, effective=effective, holder=holder,
                               name=f"{base.name}/{pan[-6:]}")


@dataclass(frozen=True, slots=True)
class ClassCalibration:
    """Real taps of one card class: the kernel's outcome, its APDUs and its host times."""

    name: str
    host_seconds: NDArray[np.float64]  # the kernel's CPU time of each calibration tap
    outcome: Outcome
    reason: str | None
    oda: str
    commands: int
    wire_bytes: int
    cid: int | None
    cryptogram: bool
    epurse: bool  # the taps were e-purse purchases (not a QuickPass fallback)

    @property
    def accepted(self) -> bool:
        return self.outcome in ACCEPTED

    def latencies(self, model: PhysicalModel) -> NDArray[np.float64]:
        """The empirical latency distribution of the class (sorted), under ``model``."""
        off = model.off_host(self.commands, self.wire_bytes, self.oda, self.cryptogram,
                             self.epurse)
        return np.sort(self.host_seconds * model.terminal_cpu_factor + off)

    def sample(self, rng: np.random.Generator, model: PhysicalModel,
               n: int) -> NDArray[np.float64]:
        """``n`` draws of the tap latency: the empirical distribution + lost frames."""
        lat = self.latencies(model)
        return lat[rng.integers(0, len(lat), size=n)] + model.retransmissions(
            rng, self.commands, n)

    def summary(self, model: PhysicalModel) -> dict[str, object]:
        lat = self.latencies(model)
        return {
            "taps": len(lat), "outcome": self.outcome.value, "reason": self.reason,
            "oda": self.oda, "epurse": self.epurse, "commands": self.commands,
            "wire_bytes": self.wire_bytes,
            "latency_ms": {q: round(float(np.quantile(lat, p)) * 1e3, 3)
                           for q, p in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))},
            "kernel_host_ms": {q: round(float(np.quantile(self.host_seconds, p)) * 1e3, 4)
                               for q, p in (("p50", 0.5), ("p99", 0.99))},
        }


def law_of(c: ClassCalibration, model: PhysicalModel) -> str:
    """The latency law of a class's taps: the e-purse path's for purse purchases, else the
    QuickPass path's (which a purse too short for the fare falls back to)."""
    return model.epurse if c.epurse else model.quickpass


def fallback_extra(name: str, c: ClassCalibration, classes: Mapping[str, ClassCalibration],
                   model: PhysicalModel) -> float:
    """Seconds a class's kernel taps take over the plain QuickPass tap of the same card kind
    (medians, never negative): the purse attempt before a purse-short fallback.  A field
    draw stands for a whole QuickPass tap, so this is what a fallback adds to it."""
    base = classes.get(name.split("/", 1)[0])
    if base is None or base is c:
        return 0.0
    return max(0.0, float(np.median(c.latencies(model)) - np.median(base.latencies(model))))


def class_draw(name: str, c: ClassCalibration, classes: Mapping[str, ClassCalibration],
               rng: np.random.Generator,
               model: PhysicalModel) -> Callable[[int], NDArray[np.float64]]:
    """``n`` latencies (seconds) of class ``name`` at a time, under its path's law."""
    if law_of(c, model) == "kernel":
        return lambda n: c.sample(rng, model, n)
    modes, extra = model.field, fallback_extra(name, c, classes, model)
    return lambda n: field_sample(modes, rng, n) + extra


def terminal_config(token_key: bytes, epurse: bool = False) -> TerminalConfig:
    """The validator's kernel configuration; ``epurse``: T-Union first, then QuickPass.  The CA
    keys are the file $TAPSIM_CA_KEYS names (``tapsim sim --ca-keys``), else the test CA."""
    path = os.environ.get("TAPSIM_CA_KEYS")
    keys = load_ca_keys_cached(path) if path else builtin_test_ca_keys()
    if epurse:
        return TerminalConfig(ca_keys=keys, token_key=token_key, aid_priority=EPURSE_FIRST)
    return TerminalConfig(ca_keys=keys, token_key=token_key)


def has_epurse(profile: CardProfile) -> bool:
    return any(a.aid == T_UNION_EPURSE for a in profile.applications)


def calibrate_class(name: str, profile: CardProfile, config: TerminalConfig, day: dt.date,
                    samples: int, amount: int = 200, *, psam: Psam | None = None,
                    epurse_balance: int | None = None) -> ClassCalibration:
    """Run ``samples`` real taps of a card of this profile and keep what they measured.

    With a ``psam`` (and a terminal that lists the e-purse first) the taps are e-purse
    purchases from a purse holding ``epurse_balance`` (too little: the kernel falls back to
    QuickPass, and that is what is measured).
    """
    if samples < 1:
        raise ConfigError(f"calibration needs at least 1 tap per class, got {samples}")
    card = VirtualCard(personalise(profile))
    taps = []
    at = dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC)
    for i in range(samples):
        # The class's usual state every time: a fresh offline budget, the same purse.
        for app in card.state.apps.values():
            app.offline_spent = 0
        if epurse_balance is not None:
            card.state.app(T_UNION_EPURSE).balance = epurse_balance
        txn = TransactionInput(amount=amount, date=day, at=at + dt.timedelta(seconds=i),
                               unpredictable_number=(i * 2654435761 % 2**32).to_bytes(4, "big"))
        taps.append(timed_tap(config, card, txn, psam))
    first = taps[0]
    return ClassCalibration(
        name=name, host_seconds=np.array([t.terminal_seconds for t in taps]),
        outcome=first.result.outcome, reason=first.result.reason, oda=first.result.oda,
        commands=first.commands, wire_bytes=first.wire_bytes, cid=first.result.cid,
        cryptogram=first.result.cryptogram is not None,
        epurse=first.result.epurse_tac is not None,
    )


class FullKernel:
    """``--fidelity full``: every tap of a rider runs the real kernel on the rider's card.

    Each rider gets a virtual card personalised with their own PAN (so the token the kernel
    reads is theirs) the first time they tap; its state (ATC, offline spending) persists.
    """

    def __init__(self, config: TerminalConfig, day: dt.date) -> None:
        self.config = config
        self.day = day
        self._cards: dict[int, VirtualCard] = {}
        self.host_seconds = 0.0
        self.taps = 0

    def card(self, key: int, profile: CardProfile, epurse_balance: int) -> VirtualCard:
        """The rider's card, personalised on first use with the purse the population gave."""
        card = self._cards.get(key)
        if card is None:
            card = VirtualCard(personalise(profile))
            if has_epurse(profile):
                card.state.app(T_UNION_EPURSE).balance = epurse_balance
            self._cards[key] = card
        return card

    def tap(self, card: VirtualCard, amount: int, unpredictable_number: bytes, at: dt.datetime,
            config: TerminalConfig | None = None, psam: Psam | None = None) -> TimedTap:
        txn = TransactionInput(amount=amount, date=at.date(), at=at,
                               unpredictable_number=unpredictable_number)
        timed = timed_tap(config or self.config, card, txn, psam)
        self.host_seconds += timed.terminal_seconds
        self.taps += 1
        return timed

    @property
    def personalised(self) -> int:
        return len(self._cards)
