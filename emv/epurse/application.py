"""The card's e-purse application (T-Union / PBOC ED/EP): purchase, load, proof, balance, log.

The card half of ``emv.epurse.messages``: it keeps the balance and both transaction serial
numbers in the card's persistent state (``AppState``), answers every command with a status
word and never raises.  A purchase or load is atomic on the card: either DEBIT/CREDIT
succeeds (balance, serial, log and proof all move together) or nothing changes.

Protections, each a defined answer:

* DEBIT or CREDIT without the INITIALIZE right before it (a replayed command, or another
  command in between) -> 6985;
* a wrong MAC1 (purchase) or MAC2 (load) -> 9302, the transaction is dropped;
* a terminal serial not above the last one this card accepted from the same terminal
  number (a replayed or rolled-back PSAM) -> 6985;
* amount above the balance -> 9401 at INITIALIZE (the card reports its overdraft limit, as
  the layout wants, but tapsim's cards never go below zero); a load beyond the maximum
  balance, or a serial number at FFFF -> 6985; an unknown key index -> 9403;
* GET TRANSACTION PROOF for a transaction the card no longer holds -> 9406.

The card's pseudo-random number is derived from its purchase key and a per-INITIALIZE
counter, so a tap is repeatable from the same state (as the QuickPass side's is).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from emv.apdu import READ_RECORD, SW, CommandApdu
from emv.card.state import AppState
from emv.epurse import keys
from emv.epurse.keys import ALGORITHM_IDS, Algorithm
from emv.epurse.messages import (
    CREDIT,
    DEBIT,
    GET_BALANCE,
    GET_PROOF,
    INITIALIZE,
    LOG_RECORDS,
    LOG_SFI,
    P1_LOAD,
    P1_PURCHASE,
    P2_EPURSE,
    SW_CONDITIONS,
    SW_INSUFFICIENT_BALANCE,
    SW_KEY_INDEX_UNSUPPORTED,
    SW_MAC_INVALID,
    SW_PROOF_UNAVAILABLE,
    TYPE_LOAD,
    TYPE_PURCHASE,
    DebitRequest,
    EpurseDataError,
    LoadInit,
    Proof,
    PublicData,
    PurchaseInit,
    TransactionRecord,
    parse_datetime_bcd,
)

KEY_INDEX = 0x01  # the one purchase/load key this card holds
MAX_SERIAL = 0xFFFF
TERMINALS_REMEMBERED = 8


def _sw(sw: int) -> bytes:
    return sw.to_bytes(2, "big")


def _ok(data: bytes) -> bytes:
    return data + b"\x90\x00"


@dataclass(frozen=True)
class EpurseImage:
    """The e-purse's fixed data: public data and the card's diversified keys."""

    public_data: PublicData
    algorithm: Algorithm
    key_version: int
    overdraft_limit: int
    max_balance: int
    purchase_key: bytes = field(repr=False)
    load_key: bytes = field(repr=False)
    tac_key: bytes = field(repr=False)

    @property
    def card_number(self) -> str:
        return self.public_data.card_number


PURSE_NUMBER_PREFIX = "3100"


def purse_number_of(pan: str) -> str:
    """The T-Union card number a TEST profile's e-purse gets when it names none: a number of
    its own, never the bank PAN (a real purse's application serial is issued by the transit
    card company, not the bank), so clearing may keep it where no PAN may go.  Derived from
    the PAN so that every card of a population (the simulation's riders) gets its own:
    ``3100``, then the PAN without its 6-digit BIN and its check digit, then a Luhn digit."""
    from emv.pan import normalize_pan, with_luhn_digit  # noqa: PLC0415 - a leaf module

    digits = normalize_pan(pan)
    return with_luhn_digit(PURSE_NUMBER_PREFIX + digits[6:-1])


def epurse_image(*, card_number: str, start: dt.date, expiry: dt.date, algorithm: Algorithm,
                 purchase_master_key: bytes, load_master_key: bytes, tac_master_key: bytes,
                 key_version: int = 1, max_balance: int = 100_000,
                 city_code: bytes = b"\x00\x00") -> EpurseImage:
    """Personalise an e-purse: diversify the issuer's three master keys by the card number."""
    number = card_number.zfill(20)
    return EpurseImage(
        public_data=PublicData(card_number=number, start=start, expiry=expiry,
                               city_code=city_code),
        algorithm=algorithm, key_version=key_version, overdraft_limit=0,
        max_balance=max_balance,
        purchase_key=keys.diversify(purchase_master_key, number, algorithm),
        load_key=keys.diversify(load_master_key, number, algorithm),
        tac_key=keys.diversify(tac_master_key, number, algorithm),
    )


@dataclass(frozen=True)
class _Pending:
    """What INITIALIZE set up for the one command allowed to follow it."""

    kind: Literal["purchase", "load"]
    amount: int
    terminal_id: bytes
    random: bytes
    serial: int
    balance: int
    session_key: bytes = field(repr=False, default=b"")


class EpurseApplication:
    """The selected e-purse: ``process`` answers one command (data + status word)."""

    def __init__(self, image: EpurseImage, state: AppState) -> None:
        self.image = image
        self.state = state
        self._pending: _Pending | None = None
        self._handlers: dict[int, Callable[[CommandApdu, _Pending | None], bytes]] = {
            INITIALIZE: self._initialize, DEBIT: self._debit, CREDIT: self._credit,
            GET_PROOF: self._get_proof, GET_BALANCE: self._get_balance,
            READ_RECORD: self._read_record,
        }

    def process(self, apdu: CommandApdu) -> bytes:
        handler = self._handlers.get(apdu.ins)
        # What INITIALIZE set up serves the very next command only, whatever that is.
        pending, self._pending = self._pending, None
        if handler is None:
            return _sw(SW.INS_NOT_SUPPORTED)
        try:
            return handler(apdu, pending)
        except EpurseDataError:
            self._pending = None
            return _sw(SW.WRONG_DATA)

    # --- commands ---------------------------------------------------------------------

    def _initialize(self, apdu: CommandApdu, _: _Pending | None) -> bytes:
        if apdu.cla != 0x80 or apdu.p2 != P2_EPURSE or apdu.p1 not in (P1_PURCHASE, P1_LOAD):
            return _sw(SW.WRONG_P1P2)
        if len(apdu.data) != 11:
            return _sw(SW.WRONG_LENGTH)
        if apdu.data[0] != KEY_INDEX:
            return _sw(SW_KEY_INDEX_UNSUPPORTED)
        amount = int.from_bytes(apdu.data[1:5], "big")
        terminal_id = bytes(apdu.data[5:11])
        st, img = self.state, self.image
        st.challenges += 1
        seed = (img.purchase_key + st.challenges.to_bytes(8, "big")
                + st.purchase_counter.to_bytes(2, "big") + st.load_counter.to_bytes(2, "big"))
        random = hashlib.sha256(b"tapsim-epurse-random" + seed + apdu.data).digest()[:4]
        algorithm_id = ALGORITHM_IDS[img.algorithm]
        if apdu.p1 == P1_PURCHASE:
            if amount > st.balance:
                return _sw(SW_INSUFFICIENT_BALANCE)
            if st.purchase_counter >= MAX_SERIAL:
                return _sw(SW_CONDITIONS)
            self._pending = _Pending("purchase", amount, terminal_id, random,
                                     st.purchase_counter, st.balance)
            return _ok(PurchaseInit(st.balance, st.purchase_counter, img.overdraft_limit,
                                    img.key_version, algorithm_id, random).to_bytes())
        if st.balance + amount > img.max_balance or st.load_counter >= MAX_SERIAL:
            return _sw(SW_CONDITIONS)
        session = keys.load_session_key(img.load_key, random, st.load_counter, img.algorithm)
        mac1 = keys.mac(session, keys.load_mac1_input(st.balance, amount, terminal_id),
                        img.algorithm)
        self._pending = _Pending("load", amount, terminal_id, random, st.load_counter,
                                 st.balance, session)
        return _ok(LoadInit(st.balance, st.load_counter, img.key_version, algorithm_id,
                            random, mac1).to_bytes())

    def _debit(self, apdu: CommandApdu, p: _Pending | None) -> bytes:
        if apdu.cla != 0x80 or apdu.p1 != 0x01 or apdu.p2 != 0x00:
            return _sw(SW.WRONG_P1P2)
        if p is None or p.kind != "purchase":
            return _sw(SW_CONDITIONS)
        request = DebitRequest.parse(apdu.data)
        st, img = self.state, self.image
        terminal = p.terminal_id.hex().upper()
        last = st.terminal_serials.get(terminal)
        if last is not None and request.terminal_serial <= last:
            return _sw(SW_CONDITIONS)  # this terminal's serial did not move on: a replay
        session = keys.purchase_session_key(img.purchase_key, p.random, p.serial,
                                            request.terminal_serial, img.algorithm)
        expected = keys.mac(session, keys.purchase_mac1_input(p.amount, p.terminal_id,
                                                              request.when), img.algorithm)
        if expected != request.mac1:
            return _sw(SW_MAC_INVALID)
        if p.amount > st.balance or p.serial != st.purchase_counter:
            return _sw(SW_CONDITIONS)
        tac = keys.mac(keys.tac_mac_key(img.tac_key, img.algorithm),
                       keys.purchase_tac_input(p.amount, p.terminal_id, request.terminal_serial,
                                               request.when), img.algorithm)
        proof = Proof(tac=tac, mac2=keys.mac(session, p.amount.to_bytes(4, "big"), img.algorithm))
        st.balance -= p.amount
        st.purchase_counter += 1
        st.terminal_serials.pop(terminal, None)
        st.terminal_serials[terminal] = request.terminal_serial
        while len(st.terminal_serials) > TERMINALS_REMEMBERED:
            del st.terminal_serials[next(iter(st.terminal_serials))]
        self._remember(TYPE_PURCHASE, p, request.when, proof)
        return _ok(proof.to_bytes())

    def _credit(self, apdu: CommandApdu, p: _Pending | None) -> bytes:
        if apdu.cla != 0x80 or apdu.p1 != 0x00 or apdu.p2 != 0x00:
            return _sw(SW.WRONG_P1P2)
        if p is None or p.kind != "load":
            return _sw(SW_CONDITIONS)
        if len(apdu.data) != 11:
            return _sw(SW.WRONG_LENGTH)
        when, mac2 = bytes(apdu.data[:7]), bytes(apdu.data[7:11])
        parse_datetime_bcd(when, "CREDIT FOR LOAD date and time")
        img, st = self.image, self.state
        expected = keys.mac(p.session_key, keys.load_mac2_input(p.amount, p.terminal_id, when),
                            img.algorithm)
        if expected != mac2:
            return _sw(SW_MAC_INVALID)
        new_balance = st.balance + p.amount
        tac = keys.mac(keys.tac_mac_key(img.tac_key, img.algorithm),
                       keys.load_tac_input(new_balance, p.serial, p.amount, p.terminal_id, when),
                       img.algorithm)
        st.balance = new_balance
        st.load_counter += 1
        self._remember(TYPE_LOAD, p, when, Proof(tac=tac, mac2=mac2))
        return _ok(tac)

    def _remember(self, transaction_type: int, p: _Pending, when: bytes, proof: Proof) -> None:
        st = self.state
        st.log.append({"serial": p.serial, "overdraft": self.image.overdraft_limit,
                       "amount": p.amount, "type": transaction_type,
                       "terminal": p.terminal_id.hex().upper(), "when": when.hex()})
        del st.log[:-LOG_RECORDS]
        st.proofs[f"{transaction_type:02X}"] = {"serial": p.serial, "tac": proof.tac.hex(),
                                                "mac2": proof.mac2.hex()}

    def _get_proof(self, apdu: CommandApdu, _: _Pending | None) -> bytes:
        if apdu.cla != 0x80 or apdu.p1 != 0x00:
            return _sw(SW.WRONG_P1P2)
        if len(apdu.data) != 2:
            return _sw(SW.WRONG_LENGTH)
        proof = self.state.proofs.get(f"{apdu.p2:02X}")
        if proof is None or proof["serial"] != int.from_bytes(apdu.data, "big"):
            return _sw(SW_PROOF_UNAVAILABLE)
        return _ok(bytes.fromhex(proof["tac"]) + bytes.fromhex(proof["mac2"]))

    def _get_balance(self, apdu: CommandApdu, _: _Pending | None) -> bytes:
        if apdu.cla != 0x80 or apdu.p1 != 0x00 or apdu.p2 != P2_EPURSE:
            return _sw(SW.WRONG_P1P2)
        return _ok(self.state.balance.to_bytes(4, "big"))

    def _read_record(self, apdu: CommandApdu, _: _Pending | None) -> bytes:
        if apdu.p2 & 0x07 != 0x04:
            return _sw(SW.WRONG_P1P2)
        if apdu.p2 >> 3 != LOG_SFI:
            return _sw(SW.FILE_NOT_FOUND)
        log = self.state.log
        if not 1 <= apdu.p1 <= len(log):
            return _sw(SW.RECORD_NOT_FOUND)
        entry = log[-apdu.p1]
        return _ok(TransactionRecord(
            serial=entry["serial"], overdraft_limit=entry["overdraft"], amount=entry["amount"],
            transaction_type=entry["type"], terminal_id=bytes.fromhex(entry["terminal"]),
            when=bytes.fromhex(entry["when"])).to_bytes())
