"""The terminal's e-purse purchase as a sans-I/O state machine the kernel hands over to.

Once the kernel has selected the e-purse (the terminal's application priority chose it),
it gives the SELECT answer to ``PurchaseFlow.start`` and then feeds it each response; the
flow answers with the next command (bytes) or a ``FlowEnd``.  The PSAM is an input (the
terminal's object), never I/O.  Why a second machine rather than more kernel stages: the
e-purse shares nothing with the QuickPass path after SELECT (no GPO, no AFL, no ODA), so
keeping it apart keeps both readable, and the kernel's only job is to map its end.

Flow: (a torn purchase of this card pending in the PSAM? resolve it first, below) ->
INITIALIZE FOR PURCHASE -> checks -> PSAM numbers the purchase and computes MAC1, and holds
it as pending -> DEBIT FOR PURCHASE -> the PSAM checks MAC2, releases the pending purchase
and remembers the card's serial.

Defined ends (``FlowKind``):

* fallback (the kernel tries its next application, e.g. QuickPass): balance short (9401 or
  seen in the answer), e-purse expired or not yet valid, no public data, the PSAM lacks the
  card's key version/algorithm, any refusal of INITIALIZE;
* declined: the card's offline serial went backwards (replay: not above what this PSAM last
  completed with it, or below a pending purchase's), MAC1 rejected (9302), DEBIT refused
  (e.g. 6985, a replayed terminal serial), MAC2 wrong (the card took the money but could not
  prove it: flagged with ``mac2_ok`` False and the TAC kept for the clearing house);
* ended: a DEBIT answered 9000 but garbled (the pending purchase is kept for the next tap);
* try-again: the card left the field; after DEBIT was sent the purchase stays pending.

Torn purchase P, next tap of the same card: GET TRANSACTION PROOF for P's card serial
first; a proof whose MAC2 verifies under P's session key -> completed (with its TAC).
Otherwise INITIALIZE tells the card's offline serial S: S < P: the counter went back
(declined); S = P: the DEBIT never took effect, P is discarded and this INITIALIZE serves
the new purchase; S > P: the card's transaction log (SFI 18) is read for serial P: our
terminal, amount and time -> completed (by log); another terminal's -> discarded; not
found -> unresolved (left to the clearing house).  Never charged twice: when P turns out
completed and this tap is its retry (same amount, within ``retry_window`` of it: the rider
presenting the card again as the validator asked), the tap is approved on P and nothing new
is debited (the proof comes first so that even a purse now too short for a second fare
gets its retry approved); otherwise the resolution only settles the terminal's record of
what the card already did, and this tap's purchase runs as usual.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from emv import tlv
from emv.apdu import ResponseApdu, read_record
from emv.epurse.issuers import issuer_id_of
from emv.epurse.messages import (
    LOG_RECORDS,
    LOG_SFI,
    PUBLIC_DATA_TAG,
    SW_INSUFFICIENT_BALANCE,
    SW_KEY_INDEX_UNSUPPORTED,
    SW_MAC_INVALID,
    TYPE_PURCHASE,
    EpurseDataError,
    Proof,
    PublicData,
    PurchaseInit,
    TransactionRecord,
    debit_for_purchase,
    get_transaction_proof,
    initialize_for_purchase,
    parse_datetime_bcd,
)
from emv.epurse.psam import Psam, PsamError, PurchaseSession


class FlowKind(StrEnum):
    APPROVED = "approved"
    DECLINED = "declined"
    FALLBACK = "fallback"
    ENDED = "ended"
    TRY_AGAIN = "try-again"


@dataclass
class EpurseRecord:
    """What the purchase leaves for the transaction record (the card number stays inside the
    kernel, which masks and tokenises it)."""

    card_number: str | None = field(default=None, repr=False)
    balance_before: int | None = None
    balance_after: int | None = None
    card_serial: int | None = None
    tac: str | None = None
    psam_id: str | None = None
    psam_serial: int | None = None
    mac2_ok: bool | None = None
    recovered: dict[str, Any] | None = None
    # What clearing needs to recompute the TAC: the card's issuer id (its city code), the key
    # version and algorithm id it answered INITIALIZE with, and the date-time digits (hex,
    # 7 bytes BCD) the purchase was MACed with.
    issuer: str | None = None
    key_version: int | None = None
    algorithm_id: int | None = None
    when: str | None = None


@dataclass(frozen=True)
class FlowEnd:
    kind: FlowKind
    reason: str | None
    record: EpurseRecord


FlowStep = bytes | FlowEnd


class _State(StrEnum):
    IDLE = "idle"
    INIT = "init"
    PROOF = "proof"
    LOG = "log"
    DEBIT = "debit"
    DONE = "done"


class PurchaseFlow:
    """One e-purse purchase; ``start`` with the SELECT answer, then ``receive`` each answer."""

    def __init__(self, psam: Psam, amount: int, when: bytes, today: dt.date,
                 retry_window: dt.timedelta = dt.timedelta(minutes=5)) -> None:
        self.psam = psam
        self.amount = amount
        self.when = when
        self.today = today
        self.retry_window = retry_window
        self.record = EpurseRecord(psam_id=psam.terminal_id.hex().upper())
        self._state = _State.IDLE
        self._card = ""
        self._issuer = ""
        self._resolved = False
        self._pending: PurchaseSession | None = None
        self._log_index = 0
        self._session: PurchaseSession | None = None

    @property
    def state(self) -> str:
        return self._state.value

    def start(self, fci: bytes) -> FlowStep:
        if self._state is not _State.IDLE:
            raise RuntimeError("a purchase flow runs once")
        node = tlv.find(tlv.decode(fci), PUBLIC_DATA_TAG)
        if node is None:
            return self._end(FlowKind.FALLBACK, "epurse-no-public-data")
        public = PublicData.parse(node.value)
        self._card = public.card_number
        self._issuer = issuer_id_of(public.city_code)
        self.record.card_number = public.card_number
        self.record.issuer = self._issuer
        if self.today < public.start:
            return self._end(FlowKind.FALLBACK, "epurse-not-yet-valid")
        if self.today > public.expiry:
            return self._end(FlowKind.FALLBACK, "epurse-expired")
        self._pending = self.psam.pending(self._card)
        if self._pending is not None:
            self._state = _State.PROOF
            return get_transaction_proof(TYPE_PURCHASE, self._pending.card_serial)
        return self._initialize()

    def receive(self, response: ResponseApdu) -> FlowStep:
        """The next command, or the end; EpurseDataError (a ValueError) for garbled answers."""
        handler = {_State.INIT: self._on_init, _State.PROOF: self._on_proof,
                   _State.LOG: self._on_log, _State.DEBIT: self._on_debit}.get(self._state)
        if handler is None:
            raise RuntimeError(f"no command is outstanding (state {self._state.value})")
        try:
            return handler(response)
        except PsamError as exc:
            return self._end(FlowKind.ENDED, f"psam-error: {exc}")

    def card_removed(self) -> FlowEnd:
        """The card left the field; a purchase whose DEBIT was sent stays pending in the PSAM."""
        if self._state is _State.DEBIT:
            return self._end(FlowKind.TRY_AGAIN, "card-removed-during-debit")
        return self._end(FlowKind.TRY_AGAIN, "card-removed")

    # --- steps ----------------------------------------------------------------------------

    def _end(self, kind: FlowKind, reason: str | None) -> FlowEnd:
        self._state = _State.DONE
        return FlowEnd(kind, reason, self.record)

    def _initialize(self) -> bytes:
        self._state = _State.INIT
        return initialize_for_purchase(self.psam.key_index, self.amount, self.psam.terminal_id)

    def _on_init(self, r: ResponseApdu) -> FlowStep:
        if r.sw == SW_INSUFFICIENT_BALANCE:
            return self._end(FlowKind.FALLBACK, "epurse-insufficient-balance")
        if r.sw == SW_KEY_INDEX_UNSUPPORTED:
            return self._end(FlowKind.FALLBACK, "epurse-key-index-unsupported")
        if not r.ok:
            return self._end(FlowKind.FALLBACK, f"epurse-init-status-{r.sw:04X}")
        init = PurchaseInit.parse(r.data)
        self.record.balance_before = init.balance
        self.record.card_serial = init.serial
        self.record.key_version = init.key_version
        self.record.algorithm_id = init.algorithm_id
        if self._pending is not None and not self._resolved:
            return self._resolve(self._pending, init)
        return self._purchase(init)

    def _purchase(self, init: PurchaseInit) -> FlowStep:
        last = self.psam.last_serial(self._card)
        if last is not None and init.serial <= last:
            return self._end(FlowKind.DECLINED, "epurse-serial-replayed")
        if not self.psam.supports(init.key_version, init.algorithm_id, self._issuer):
            return self._end(FlowKind.FALLBACK, "epurse-key-unsupported")
        if init.balance < self.amount:
            return self._end(FlowKind.FALLBACK, "epurse-insufficient-balance")
        session = self.psam.begin_purchase(self._card, init, self.amount, self.when,
                                           self._issuer)
        self.psam.hold(session)  # from here on a lost answer leaves a torn purchase to resolve
        self._session = session
        self.record.psam_serial = session.terminal_serial
        self.record.when = self.when.hex().upper()
        self._state = _State.DEBIT
        return debit_for_purchase(session.terminal_serial, self.when, bytes.fromhex(session.mac1))

    def _on_debit(self, r: ResponseApdu) -> FlowStep:
        session = self._session
        assert session is not None  # set with the DEBIT it answers
        if r.ok:
            if len(r.data) != 8:  # the card may have debited: keep the purchase pending
                return self._end(FlowKind.ENDED, "epurse-debit-answer-malformed")
            proof = Proof.parse(r.data)
            self.psam.release(self._card)
            self.psam.completed(self._card, session.card_serial)
            ok = self.psam.verify_mac2(self._card, session, proof.mac2)
            self.record.tac = proof.tac.hex().upper()
            self.record.mac2_ok = ok
            self.record.balance_after = session.balance_before - session.amount
            if not ok:
                return self._end(FlowKind.DECLINED, "epurse-mac2-invalid")
            return self._end(FlowKind.APPROVED, None)
        self.psam.release(self._card)  # an error status: the card did not debit
        if r.sw == SW_MAC_INVALID:
            return self._end(FlowKind.DECLINED, "epurse-mac1-rejected")
        if r.sw == SW_INSUFFICIENT_BALANCE:
            return self._end(FlowKind.FALLBACK, "epurse-insufficient-balance")
        return self._end(FlowKind.DECLINED, f"epurse-debit-refused-{r.sw:04X}")

    # --- torn purchase --------------------------------------------------------------------

    def _on_proof(self, r: ResponseApdu) -> FlowStep:
        pending = self._pending
        assert pending is not None  # the proof is asked for a pending purchase
        if r.ok:
            proof = Proof.parse(r.data)
            if self.psam.verify_mac2(self._card, pending, proof.mac2):
                self._settle("completed", proof.tac.hex().upper())
                return self._after_completed(pending, proof.tac.hex().upper(), True)
        return self._initialize()  # no proof, or not ours: the card's serial says more

    def _resolve(self, pending: PurchaseSession, init: PurchaseInit) -> FlowStep:
        if init.serial < pending.card_serial:
            return self._end(FlowKind.DECLINED, "epurse-serial-replayed")
        if init.serial == pending.card_serial:
            self._settle("discarded")
            return self._purchase(init)
        return self._read_log()

    def _read_log(self) -> bytes:
        self._state = _State.LOG
        self._log_index += 1
        return read_record(LOG_SFI, self._log_index).to_bytes()

    def _on_log(self, r: ResponseApdu) -> FlowStep:
        pending = self._pending
        assert pending is not None
        if not r.ok:
            self._settle("unresolved")
            return self._initialize()
        entry = TransactionRecord.parse(r.data)
        if entry.serial != pending.card_serial or entry.transaction_type != TYPE_PURCHASE:
            if self._log_index >= LOG_RECORDS:
                self._settle("unresolved")
                return self._initialize()
            return self._read_log()
        ours = (entry.terminal_id == self.psam.terminal_id and entry.amount == pending.amount
                and entry.when.hex() == pending.when)
        self._settle("completed-by-log" if ours else "discarded")
        return self._after_completed(pending, None, None) if ours else self._initialize()

    def _after_completed(self, pending: PurchaseSession, tac: str | None,
                         mac2_ok: bool | None) -> FlowStep:
        """A torn purchase the card did complete: this tap's, if it is its retry."""
        then = parse_datetime_bcd(bytes.fromhex(pending.when), "pending purchase time")
        now = parse_datetime_bcd(self.when, "tap time")
        if pending.amount != self.amount or not dt.timedelta(0) <= now - then <= self.retry_window:
            return self._initialize()  # an earlier trip's: this tap pays for its own
        rec = self.record
        rec.balance_before = pending.balance_before
        rec.balance_after = pending.balance_before - pending.amount
        rec.card_serial = pending.card_serial
        rec.psam_serial = pending.terminal_serial
        rec.when = pending.when.upper()
        rec.key_version = pending.key_version
        rec.algorithm_id = pending.algorithm_id
        rec.tac = tac
        rec.mac2_ok = mac2_ok
        return self._end(FlowKind.APPROVED, None)

    def _settle(self, status: str, tac: str | None = None) -> None:
        pending = self._pending
        if pending is None:
            raise EpurseDataError("no pending purchase to settle")
        self.psam.release(self._card)
        if status.startswith("completed"):
            self.psam.completed(self._card, pending.card_serial)
        self.record.recovered = {
            "status": status, "card_serial": pending.card_serial,
            "psam_serial": pending.terminal_serial, "amount": pending.amount, "tac": tac,
            # what a record of it needs when this tap is not its retry (the validator journals
            # it apart, or the fare it took would reach no clearing)
            "when": pending.when.upper(), "balance_before": pending.balance_before,
            "key_version": pending.key_version, "algorithm_id": pending.algorithm_id,
        }
        self._resolved = True
