"""Loading (recharging) an e-purse, as a bank branch does: the host side of INITIALIZE/CREDIT
FOR LOAD, with the load key, which no transit terminal holds.

``load_epurse`` drives one load over any transport (a callable sending one APDU, e.g. a
``VirtualCard.process``): SELECT the e-purse, INITIALIZE FOR LOAD, check the card's MAC1
under the load session key (so the card is genuine and its balance as stated), answer
with MAC2 in CREDIT FOR LOAD, and return the card's TAC with the new balance.  Every
failure is a ``LoadError`` with a short reason code; nothing in it shows a key or the card
number.  The account debit behind a load is the bank's business: ``issuer.epurse_load``
runs the same steps (``open_session``, ``LoadSession.mac2``, ``load_tac``) with a durable
pending load between MAC1 and MAC2 (`tapsim card load`).
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field

from emv import tlv
from emv.apdu import ResponseApdu, select
from emv.epurse import keys
from emv.epurse.keys import Algorithm, algorithm_from_id
from emv.epurse.messages import (
    PUBLIC_DATA_TAG,
    EpurseDataError,
    LoadInit,
    PublicData,
    credit_for_load,
    datetime_bcd,
    initialize_for_load,
)
from emv.tlv import TlvError

T_UNION_EPURSE = bytes.fromhex("A000000632010105")


class LoadError(Exception):
    """A load that did not happen (or whose outcome the host could not prove)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass(frozen=True)
class LoadReceipt:
    balance_before: int
    balance_after: int
    online_serial: int  # the card's load serial this load used
    tac: str  # hex
    tac_ok: bool | None  # None when no TAC master key was given to check it


@dataclass(frozen=True)
class LoadSession:
    """A load whose MAC1 verified: what CREDIT FOR LOAD and the TAC check need."""

    card_number: str = field(repr=False)
    algorithm: Algorithm
    init: LoadInit
    amount: int
    terminal_id: bytes
    session_key: bytes = field(repr=False)

    def mac2(self, when: bytes) -> bytes:
        """The host's MAC2 for CREDIT FOR LOAD at ``when`` (BCD date-time, 7 bytes)."""
        return keys.mac(self.session_key,
                        keys.load_mac2_input(self.amount, self.terminal_id, when), self.algorithm)


def open_session(load_master_key: bytes, card_number: str, init: LoadInit, amount: int,
                 terminal_id: bytes) -> LoadSession | None:
    """The load session if the card's MAC1 verifies under the issuer's load key, else None
    (the card is not genuine, or its answer was altered); LoadError for an algorithm id
    this code does not know."""
    algorithm = algorithm_from_id(init.algorithm_id)
    if algorithm is None:
        raise LoadError("unknown-algorithm", f"algorithm id {init.algorithm_id:02X}")
    load_key = keys.diversify(load_master_key, card_number, algorithm)
    session = keys.load_session_key(load_key, init.random, init.serial, algorithm)
    expected = keys.mac(session, keys.load_mac1_input(init.balance, amount, terminal_id),
                        algorithm)
    if not hmac.compare_digest(expected, init.mac1):
        return None
    return LoadSession(card_number, algorithm, init, amount, terminal_id, session)


def load_tac(tac_master_key: bytes, card_number: str, algorithm: Algorithm, *,
             balance_before: int, online_serial: int, amount: int, terminal_id: bytes,
             when: bytes) -> bytes:
    """The TAC a genuine card gives for a load: what the issuer recomputes to verify it."""
    dtk = keys.diversify(tac_master_key, card_number, algorithm)
    return keys.mac(keys.tac_mac_key(dtk, algorithm),
                    keys.load_tac_input(balance_before + amount, online_serial, amount,
                                        terminal_id, when), algorithm)


def _exchange(transceive: Callable[[bytes], bytes], command: bytes, what: str) -> ResponseApdu:
    try:
        response = ResponseApdu.parse(transceive(command))
    except ValueError as exc:
        raise LoadError("malformed-response", f"{what}: {exc}") from None
    if not response.ok:
        raise LoadError("card-refused", f"{what}: status {response.sw:04X}")
    return response


def load_epurse(transceive: Callable[[bytes], bytes], *, load_master_key: bytes, amount: int,
                at: dt.datetime, terminal_id: bytes, key_index: int = 1,
                tac_master_key: bytes | None = None,
                aid: bytes = T_UNION_EPURSE) -> LoadReceipt:
    """Credit ``amount`` (minor units) to the card's e-purse; the receipt or LoadError."""
    if not 0 < amount <= 0xFFFFFFFF:
        raise LoadError("bad-amount", "a load is 1 to 4294967295 minor units")
    if len(terminal_id) != 6:
        raise LoadError("bad-terminal", "the terminal number is 6 bytes")
    if at.tzinfo is None:
        raise LoadError("bad-time", "the load time must be timezone-aware")
    try:
        fci = _exchange(transceive, select(aid).to_bytes(), "SELECT")
        node = tlv.find(tlv.decode(fci.data), PUBLIC_DATA_TAG)
        if node is None:
            raise LoadError("no-epurse", "the application has no e-purse public data")
        card_number = PublicData.parse(node.value).card_number
        answer = _exchange(transceive, initialize_for_load(key_index, amount, terminal_id),
                           "INITIALIZE FOR LOAD")
        init = LoadInit.parse(answer.data)
    except (TlvError, EpurseDataError) as exc:
        raise LoadError("malformed-response", str(exc)) from None
    session = open_session(load_master_key, card_number, init, amount, terminal_id)
    if session is None:
        raise LoadError("card-mac1-invalid", "the card's MAC1 does not verify under the load key")
    when = datetime_bcd(at)
    answer = _exchange(transceive, credit_for_load(when, session.mac2(when)), "CREDIT FOR LOAD")
    if len(answer.data) != 4:
        raise LoadError("malformed-response", f"CREDIT FOR LOAD answered {len(answer.data)} bytes")
    balance_after = init.balance + amount
    tac_ok = None
    if tac_master_key is not None:
        tac = load_tac(tac_master_key, card_number, session.algorithm,
                       balance_before=init.balance, online_serial=init.serial, amount=amount,
                       terminal_id=terminal_id, when=when)
        tac_ok = hmac.compare_digest(tac, answer.data)
    return LoadReceipt(balance_before=init.balance, balance_after=balance_after,
                       online_serial=init.serial, tac=answer.data.hex().upper(), tac_ok=tac_ok)
