"""E-purse commands and answers as bytes: what the card parses and the terminal builds, and back.

PBOC ED/EP (JR/T 0025.2 §5.2) as JT/T 978 uses it, CLA 80:

* INITIALIZE FOR PURCHASE ``80 50 01 02 0B`` key index 1 || amount 4 || terminal number 6,
  Le 0F -> balance 4 || offline serial 2 || overdraft limit 3 || key version 1 ||
  algorithm id 1 || pseudo-random number 4;
* DEBIT FOR PURCHASE ``80 54 01 00 0F`` terminal serial 4 || date 4 || time 3 || MAC1 4,
  Le 08 -> TAC 4 || MAC2 4;
* INITIALIZE FOR LOAD ``80 50 00 02 0B`` (same data), Le 10 -> balance 4 || online serial 2 ||
  key version 1 || algorithm id 1 || random 4 || MAC1 4;
* CREDIT FOR LOAD ``80 52 00 00 0B`` date 4 || time 3 || MAC2 4, Le 04 -> TAC 4;
* GET TRANSACTION PROOF ``80 5A 00 <type> 02`` serial 2 (the serial that transaction used),
  Le 08 -> TAC 4 || MAC2 4 (the order DEBIT FOR PURCHASE answers in); 9406 if the card no
  longer has it;
* GET BALANCE ``80 5C 00 02 04`` -> balance 4;
* transaction log: SFI 18, cyclic, record 1 the newest, 23 bytes = serial 2 || overdraft
  limit 3 || amount 4 || type 1 || terminal number 6 || date 4 || time 3 (the layout
  Proxmark3's read_t-union.py decodes);
* the application's public data in the SELECT answer (A5 / 9F0C, T-Union style, 30 bytes):
  card type 1 || city code 2 || issuer 7 || application serial number 10 (BCD, the card
  number) || start date 4 || expiry date 4 || reserved 2.

Dates and times are BCD YYYYMMDD and hhmmss.  Parsers raise ``EpurseDataError`` naming the
field; they never echo a card number.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from emv.apdu import CommandApdu

INITIALIZE, DEBIT, CREDIT, GET_PROOF, GET_BALANCE = 0x50, 0x54, 0x52, 0x5A, 0x5C
P1_LOAD, P1_PURCHASE, P2_EPURSE = 0x00, 0x01, 0x02
TYPE_LOAD, TYPE_PURCHASE = 0x02, 0x06
LOG_SFI = 0x18
LOG_RECORDS = 10
RECORD_SIZE = 23
PUBLIC_DATA_TAG = 0x9F0C
PUBLIC_DATA_SIZE = 30

# Status words of the e-purse (PBOC ED/EP).
SW_INSUFFICIENT_BALANCE = 0x9401
SW_KEY_INDEX_UNSUPPORTED = 0x9403
SW_PROOF_UNAVAILABLE = 0x9406
SW_MAC_INVALID = 0x9302
SW_CONDITIONS = 0x6985


class EpurseDataError(ValueError):
    """E-purse bytes that do not follow the layouts above (which field, why)."""


def _bcd_digits(raw: bytes, what: str) -> str:
    text = raw.hex()
    if not text.isdigit():
        raise EpurseDataError(f"{what} is not BCD")
    return text


def datetime_bcd(moment: dt.datetime) -> bytes:
    """YYYYMMDD || hhmmss, 7 bytes BCD: the wall-clock digits a card records."""
    return bytes.fromhex(moment.strftime("%Y%m%d%H%M%S"))


def parse_datetime_bcd(raw: bytes, what: str = "date and time") -> dt.datetime:
    """7 bytes BCD back to a naive wall-clock datetime; EpurseDataError if it is not one."""
    if len(raw) != 7:
        raise EpurseDataError(f"{what}: 7 bytes, got {len(raw)}")
    text = _bcd_digits(raw, what)
    try:
        return dt.datetime.strptime(text, "%Y%m%d%H%M%S")
    except ValueError:
        raise EpurseDataError(f"{what}: not a valid date and time") from None


def _bcd_date(raw: bytes, what: str) -> dt.date:
    text = _bcd_digits(raw, what)
    try:
        return dt.datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        raise EpurseDataError(f"{what}: not a valid date") from None


def _amount(amount: int) -> bytes:
    if not 0 <= amount <= 0xFFFFFFFF:
        raise EpurseDataError("an e-purse amount is 0 to 4294967295 minor units")
    return amount.to_bytes(4, "big")


def _terminal(terminal_id: bytes) -> bytes:
    if len(terminal_id) != 6:
        raise EpurseDataError(f"terminal number is 6 bytes, got {len(terminal_id)}")
    return terminal_id


# --- purchase ---------------------------------------------------------------------------

def initialize_for_purchase(key_index: int, amount: int, terminal_id: bytes) -> bytes:
    data = bytes((key_index,)) + _amount(amount) + _terminal(terminal_id)
    return CommandApdu(0x80, INITIALIZE, P1_PURCHASE, P2_EPURSE, data, 0x0F).to_bytes()


@dataclass(frozen=True)
class PurchaseInit:
    """The card's answer to INITIALIZE FOR PURCHASE."""

    balance: int
    serial: int  # offline transaction serial number: the number this purchase will use
    overdraft_limit: int
    key_version: int
    algorithm_id: int
    random: bytes

    def to_bytes(self) -> bytes:
        return (self.balance.to_bytes(4, "big") + self.serial.to_bytes(2, "big")
                + self.overdraft_limit.to_bytes(3, "big")
                + bytes((self.key_version, self.algorithm_id)) + self.random)

    @classmethod
    def parse(cls, raw: bytes) -> PurchaseInit:
        if len(raw) != 15:
            raise EpurseDataError(f"INITIALIZE FOR PURCHASE answer: 15 bytes, got {len(raw)}")
        return cls(balance=int.from_bytes(raw[0:4], "big"), serial=int.from_bytes(raw[4:6], "big"),
                   overdraft_limit=int.from_bytes(raw[6:9], "big"), key_version=raw[9],
                   algorithm_id=raw[10], random=bytes(raw[11:15]))


def debit_for_purchase(terminal_serial: int, when: bytes, mac1: bytes) -> bytes:
    if not 0 <= terminal_serial <= 0xFFFFFFFF or len(when) != 7 or len(mac1) != 4:
        raise EpurseDataError("DEBIT FOR PURCHASE needs serial (4 bytes), date-time 7, MAC1 4")
    data = terminal_serial.to_bytes(4, "big") + when + mac1
    return CommandApdu(0x80, DEBIT, 0x01, 0x00, data, 0x08).to_bytes()


@dataclass(frozen=True)
class DebitRequest:
    terminal_serial: int
    when: bytes
    mac1: bytes

    @classmethod
    def parse(cls, raw: bytes) -> DebitRequest:
        if len(raw) != 15:
            raise EpurseDataError(f"DEBIT FOR PURCHASE data: 15 bytes, got {len(raw)}")
        parse_datetime_bcd(raw[4:11], "DEBIT FOR PURCHASE date and time")
        return cls(int.from_bytes(raw[0:4], "big"), bytes(raw[4:11]), bytes(raw[11:15]))


@dataclass(frozen=True)
class Proof:
    """TAC and MAC2 of a purchase: DEBIT FOR PURCHASE's answer, or GET TRANSACTION PROOF's."""

    tac: bytes
    mac2: bytes

    def to_bytes(self) -> bytes:
        return self.tac + self.mac2

    @classmethod
    def parse(cls, raw: bytes) -> Proof:
        if len(raw) != 8:
            raise EpurseDataError(f"TAC || MAC2: 8 bytes, got {len(raw)}")
        return cls(bytes(raw[:4]), bytes(raw[4:]))


def get_transaction_proof(transaction_type: int, serial: int) -> bytes:
    return CommandApdu(0x80, GET_PROOF, 0x00, transaction_type, serial.to_bytes(2, "big"),
                       0x08).to_bytes()


# --- load -------------------------------------------------------------------------------

def initialize_for_load(key_index: int, amount: int, terminal_id: bytes) -> bytes:
    data = bytes((key_index,)) + _amount(amount) + _terminal(terminal_id)
    return CommandApdu(0x80, INITIALIZE, P1_LOAD, P2_EPURSE, data, 0x10).to_bytes()


@dataclass(frozen=True)
class LoadInit:
    """The card's answer to INITIALIZE FOR LOAD."""

    balance: int
    serial: int  # online (load) transaction serial number
    key_version: int
    algorithm_id: int
    random: bytes
    mac1: bytes

    def to_bytes(self) -> bytes:
        return (self.balance.to_bytes(4, "big") + self.serial.to_bytes(2, "big")
                + bytes((self.key_version, self.algorithm_id)) + self.random + self.mac1)

    @classmethod
    def parse(cls, raw: bytes) -> LoadInit:
        if len(raw) != 16:
            raise EpurseDataError(f"INITIALIZE FOR LOAD answer: 16 bytes, got {len(raw)}")
        return cls(balance=int.from_bytes(raw[0:4], "big"), serial=int.from_bytes(raw[4:6], "big"),
                   key_version=raw[6], algorithm_id=raw[7], random=bytes(raw[8:12]),
                   mac1=bytes(raw[12:16]))


def credit_for_load(when: bytes, mac2: bytes) -> bytes:
    if len(when) != 7 or len(mac2) != 4:
        raise EpurseDataError("CREDIT FOR LOAD needs date-time (7 bytes) and MAC2 (4 bytes)")
    return CommandApdu(0x80, CREDIT, 0x00, 0x00, when + mac2, 0x04).to_bytes()


# --- records and public data ------------------------------------------------------------

@dataclass(frozen=True)
class TransactionRecord:
    """One record of the card's transaction log (SFI 18)."""

    serial: int
    overdraft_limit: int
    amount: int
    transaction_type: int
    terminal_id: bytes
    when: bytes  # 7 bytes BCD

    def to_bytes(self) -> bytes:
        return (self.serial.to_bytes(2, "big") + self.overdraft_limit.to_bytes(3, "big")
                + _amount(self.amount) + bytes((self.transaction_type,))
                + _terminal(self.terminal_id) + self.when)

    @classmethod
    def parse(cls, raw: bytes) -> TransactionRecord:
        if len(raw) != RECORD_SIZE:
            raise EpurseDataError(f"transaction record: {RECORD_SIZE} bytes, got {len(raw)}")
        parse_datetime_bcd(raw[16:23], "transaction record date and time")
        return cls(serial=int.from_bytes(raw[0:2], "big"),
                   overdraft_limit=int.from_bytes(raw[2:5], "big"),
                   amount=int.from_bytes(raw[5:9], "big"), transaction_type=raw[9],
                   terminal_id=bytes(raw[10:16]), when=bytes(raw[16:23]))


@dataclass(frozen=True)
class PublicData:
    """The e-purse application's public data (9F0C in its SELECT answer)."""

    card_number: str  # 20 digits (application serial number)
    start: dt.date
    expiry: dt.date
    card_type: int = 0x02
    city_code: bytes = b"\x00\x00"
    issuer: bytes = bytes(7)

    def to_bytes(self) -> bytes:
        if len(self.card_number) != 20 or not self.card_number.isdigit():
            raise EpurseDataError("the application serial number is 20 digits")
        return (bytes((self.card_type,)) + self.city_code + self.issuer
                + bytes.fromhex(self.card_number) + bytes.fromhex(self.start.strftime("%Y%m%d"))
                + bytes.fromhex(self.expiry.strftime("%Y%m%d")) + b"\x00\x00")

    @classmethod
    def parse(cls, raw: bytes) -> PublicData:
        if len(raw) != PUBLIC_DATA_SIZE:
            raise EpurseDataError(f"e-purse public data: {PUBLIC_DATA_SIZE} bytes, got {len(raw)}")
        return cls(card_number=_bcd_digits(raw[10:20], "application serial number"),
                   start=_bcd_date(raw[20:24], "start date"),
                   expiry=_bcd_date(raw[24:28], "expiry date"),
                   card_type=raw[0], city_code=bytes(raw[1:3]), issuer=bytes(raw[3:10]))
