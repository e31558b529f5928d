"""The clearing core: a day of e-purse purchases in, decisions and positions out (no I/O).

    decisions = clear_day(records, history, issuers, verifier)
    positions = settle(decisions)

Each record is checked in a fixed order, and the first failed check is its refusal reason
(``Reason``); only then does it count:

1. ``duplicate``: its tap id was already decided, or it is the very purchase of a record
   already cleared (same issuer, card, card serial, PSAM id, PSAM serial and TAC: the same
   debit journaled twice).  Harmless, but never paid twice.
2. ``incomplete-record``: it lacks what the TAC needs (issuer, card number, key version,
   algorithm, date-time digits): a record from a validator that predates those fields.
3. ``unknown-issuer`` / ``unknown-key``: no issuer with that id, or none of its TAC master
   keys has the card's (key version, algorithm).
4. ``tac-invalid``: the TAC recomputed with the issuer's TAC key (diversified by the card
   number, over amount || 06 || PSAM terminal id || PSAM serial || date || time: JR/T
   0025.2 ED/EP as JT/T 978 takes it over, ``emv.epurse.keys``) differs: forged or altered.
5. ``replayed-serial``: another purchase with the same card serial of that card was already
   cleared (a restored or cloned card spends the same serial twice).
6. ``out-of-sequence``: a card's offline serial only goes up with time.  A record of card C
   with serial s at time t is out of sequence when a record of C cleared before (``history``)
   has an *earlier* time and a *higher* serial, or a *later* time and a *lower* serial; and,
   among C's records of this run that passed every other check, when it is not on the
   longest chain whose serials rise strictly with time (the chain ending earliest, if
   several): the few records that contradict the rest are refused, not the many.  Gaps are
   not refusals (purchases elsewhere, not yet uploaded: pending, not wrong); records of
   equal time are ordered by serial.

Records are taken in (time, serial, tap id) order: of two purchases with one serial, the
first is cleared and the second is the replay; a re-run over the same records decides the
same way.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from clearing.tac import TacVerifier
from emv.epurse.issuers import IssuerRegistry


class Reason(StrEnum):
    DUPLICATE = "duplicate"
    INCOMPLETE = "incomplete-record"
    UNKNOWN_ISSUER = "unknown-issuer"
    UNKNOWN_KEY = "unknown-key"
    TAC_INVALID = "tac-invalid"
    REPLAYED = "replayed-serial"
    OUT_OF_SEQUENCE = "out-of-sequence"


@dataclass(frozen=True, slots=True)
class PurseRecord:
    """One e-purse purchase as the back office kept it (amount in fen)."""

    tap_id: str
    issuer_id: str | None
    card_number: str | None = field(repr=False)
    card_serial: int
    amount: int
    tac: str  # hex, 4 bytes
    psam_id: str  # hex, the PSAM's 6-byte terminal id
    psam_serial: int
    key_version: int | None
    algorithm_id: int | None
    tac_time: str | None  # YYYYMMDDhhmmss
    time_us: int
    operator_id: str
    day: str

    @property
    def card(self) -> tuple[str, str]:
        return (self.issuer_id or "", self.card_number or "")

    def same_purchase(self, other: PurseRecord) -> bool:
        return (self.card == other.card and self.card_serial == other.card_serial
                and self.psam_id == other.psam_id and self.psam_serial == other.psam_serial
                and self.tac.upper() == other.tac.upper())


class Decision(NamedTuple):
    record: PurseRecord
    reason: Reason | None  # None: cleared

    @property
    def cleared(self) -> bool:
        return self.reason is None


class _CardSerials:
    """A card's cleared (time, serial) pairs in time order, for the sequence checks."""

    def __init__(self) -> None:
        self.times: list[tuple[int, int]] = []
        self.by_serial: dict[int, PurseRecord] = {}

    def add(self, r: PurseRecord) -> None:
        self.times.append((r.time_us, r.card_serial))  # read in any order (out_of_sequence)
        self.by_serial.setdefault(r.card_serial, r)

    def out_of_sequence(self, r: PurseRecord) -> bool:
        # Strictly earlier records must have lower serials, strictly later ones higher.
        return any((t < r.time_us and s > r.card_serial) or (t > r.time_us and s < r.card_serial)
                   for t, s in self.times)


def _check(r: PurseRecord, verifier: TacVerifier) -> Reason | None:
    if (r.issuer_id is None or r.card_number is None or r.key_version is None
            or r.algorithm_id is None or r.tac_time is None):
        return Reason.INCOMPLETE
    try:
        why = verifier.verify(r.issuer_id, r.key_version, r.algorithm_id, r.card_number,
                              r.amount, r.psam_id, r.psam_serial, r.tac_time, r.tac)
    except (ValueError, OverflowError):  # not hex, wrong sizes: nothing a card would give
        return Reason.TAC_INVALID
    return None if why is None else Reason(why)


def _longest_rising(records: list[PurseRecord]) -> set[str]:
    """Tap ids of the longest chain of ``records`` (in time order) whose serials rise
    strictly; of several, the one ending earliest (patience sorting, deterministic)."""
    tails: list[int] = []  # smallest last serial of a chain of each length
    tail_at: list[int] = []  # index of that record
    parent: list[int] = []
    for i, r in enumerate(records):
        k = bisect.bisect_left(tails, r.card_serial)
        parent.append(tail_at[k - 1] if k else -1)
        if k == len(tails):
            tails.append(r.card_serial)
            tail_at.append(i)
        else:
            tails[k], tail_at[k] = r.card_serial, i
    chain: set[str] = set()
    i = tail_at[-1] if tail_at else -1
    while i >= 0:
        chain.add(records[i].tap_id)
        i = parent[i]
    return chain


def clear_day(records: Iterable[PurseRecord], history: Iterable[PurseRecord],
              issuers: IssuerRegistry, verifier: TacVerifier | None = None,
              decided: Iterable[str] = ()) -> list[Decision]:
    """Decide every record (cleared or refused with its reason), in (time, tap id) order.

    ``history``: records cleared before (any day) of the cards concerned; ``decided``: tap
    ids already decided (given again, they come back ``duplicate``); ``verifier``: one made
    with the same ``issuers`` (its card cache may be shared across days)."""
    verifier = verifier or TacVerifier(issuers)
    seen_ids = set(decided)
    cards: dict[tuple[str, str], _CardSerials] = {}
    for h in history:
        cards.setdefault(h.card, _CardSerials()).add(h)
    ordered = sorted(records, key=lambda x: (x.time_us, x.card_serial, x.tap_id))
    reasons: list[Reason | None] = []
    # This run's records that passed every check so far, per card: in time order, and the
    # first of each serial.
    candidates: dict[tuple[str, str], list[tuple[int, PurseRecord]]] = {}
    run_serials: dict[tuple[str, str], dict[int, PurseRecord]] = {}
    for n, r in enumerate(ordered):
        card = (r.issuer_id or "", r.card_number or "")
        serials = cards.get(card)
        past = serials.by_serial.get(r.card_serial) if serials else None
        ours = run_serials.get(card)
        earlier = ours.get(r.card_serial) if ours else None
        reason: Reason | None
        if (r.tap_id in seen_ids or (past is not None and past.same_purchase(r))
                or (earlier is not None and earlier.same_purchase(r))):
            reason = Reason.DUPLICATE
        else:
            reason = _check(r, verifier)
            if reason is None and (past is not None or earlier is not None):
                reason = Reason.REPLAYED
            if reason is None and serials is not None and serials.out_of_sequence(r):
                reason = Reason.OUT_OF_SEQUENCE
        seen_ids.add(r.tap_id)
        reasons.append(reason)
        if reason is None:
            candidates.setdefault(card, []).append((n, r))
            run_serials.setdefault(card, {})[r.card_serial] = r
    # Among a card's records of this run, the longest chain whose serials rise with time is
    # cleared; a record outside it broke the card's sequence.
    for group in candidates.values():
        if all(a[1].card_serial < b[1].card_serial for a, b in itertools.pairwise(group)):
            continue  # already rising (the usual day): the chain is all of them
        chain = _longest_rising([r for _, r in group])
        for n, r in group:
            if r.tap_id not in chain:
                reasons[n] = Reason.OUT_OF_SEQUENCE
    return [Decision(r, reasons[n]) for n, r in enumerate(ordered)]


# -- positions ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Position:
    """What one issuer owes one operator for a day: its cards' cleared purchases there."""

    issuer_id: str
    operator_id: str
    count: int
    amount: int  # fen


@dataclass(frozen=True, slots=True)
class Net:
    """A party's net position: positive receives, negative pays (fen)."""

    party: str  # "issuer:<id>" or "operator:<id>"
    receives: int
    pays: int

    @property
    def net(self) -> int:
        return self.receives - self.pays


@dataclass(frozen=True)
class Settlement:
    positions: list[Position]
    nets: list[Net]
    city_nets: list[tuple[str, str, int]]  # (payer issuer, payee issuer, fen), netted pairs


def settle(decisions: Iterable[Decision],
           home: Mapping[str, str] | None = None) -> Settlement:
    """Gross positions issuer -> operator, each party's net, and (with ``home``: operator ->
    its city's issuer id) the net between cities: what city X's issuer pays city Y's side
    for X's cards ridden in Y, less the reverse, one payment per pair."""
    gross: dict[tuple[str, str], list[int]] = {}
    for d in decisions:
        if d.cleared:
            r = d.record
            cell = gross.setdefault((r.issuer_id or "", r.operator_id), [0, 0])
            cell[0] += 1
            cell[1] += r.amount
    positions = [Position(i, o, c, a) for (i, o), (c, a) in sorted(gross.items())]
    parties: dict[str, list[int]] = {}
    for p in positions:
        parties.setdefault(f"issuer:{p.issuer_id}", [0, 0])[1] += p.amount
        parties.setdefault(f"operator:{p.operator_id}", [0, 0])[0] += p.amount
    nets = [Net(k, v[0], v[1]) for k, v in sorted(parties.items())]
    city_nets: list[tuple[str, str, int]] = []
    if home is not None:
        owed: dict[tuple[str, str], int] = {}
        for p in positions:
            city = home.get(p.operator_id)
            if city is not None and city != p.issuer_id:
                owed[(p.issuer_id, city)] = owed.get((p.issuer_id, city), 0) + p.amount
        for a, b in sorted({tuple(sorted(k)) for k in owed}):
            diff = owed.get((a, b), 0) - owed.get((b, a), 0)
            if diff > 0:
                city_nets.append((a, b, diff))
            elif diff < 0:
                city_nets.append((b, a, -diff))
    return Settlement(positions, nets, city_nets)
