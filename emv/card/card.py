"""The virtual card: a sans-I/O APDU processor (bytes in, bytes out) over an image and a state.

It answers the commands of a contactless tap the way a qPBOC/qUICS card does:
SELECT (PPSE and AIDs), GET PROCESSING OPTIONS (the card decides offline approval,
online request or decline, and returns its cryptogram and fDDA signature in the
same answer), READ RECORD, GET DATA, GENERATE AC; and, with the e-purse selected, its own
commands (``emv.epurse.application``: purchase, load, proof, balance, transaction log).
Whatever it is sent, it answers with a status word; it never raises.

The card's own randomness (the unpredictable number in 9F69) is derived from the
card key and the ATC, so a tap is repeatable: same card, same state, same
terminal input -> same bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from emv import tlv
from emv.apdu import (
    GENERATE_AC,
    GET_BALANCE,
    GET_DATA,
    GET_PROCESSING_OPTIONS,
    READ_RECORD,
    SELECT,
    SW,
    ApduError,
    CommandApdu,
)
from emv.appdata import (
    CID_AAC,
    CID_ARQC,
    CID_TC,
    AppDataError,
    IssuerApplicationData,
    ac_input,
    ac_terminal_data,
    amount_bcd,
    bcd_amount,
)
from emv.card.image import AFL, CDOL1, FDDA_RECORD, PDOL, PPSE_NAME, AppImage, CardImage
from emv.card.state import CardState
from emv.dol import split_dol_data
from emv.epurse.application import EpurseApplication
from emv.qualifiers import (
    CTQ_ISSUER_UPDATE,
    CTQ_ONLINE_PIN,
    CTQ_SIGNATURE,
    TTQ_CVM_REQUIRED,
    TTQ_ISSUER_UPDATE,
    TTQ_ODA_FOR_ONLINE,
    TTQ_OFFLINE_ONLY,
    TTQ_ONLINE_CRYPTOGRAM_REQUIRED,
    TTQ_ONLINE_PIN,
    TTQ_QPBOC,
    TTQ_SIGNATURE,
    has_bit,
    with_bits,
)
from emv.tlv import TlvError

PDOL_DATA_SIZE = sum(entry.length for entry in PDOL)

# The historical bytes of tapsim's virtual card: ASCII, naming no real product.
HISTORICAL_BYTES = b"TAPSIM-VC01"


def contactless_atr(historical: bytes) -> bytes:
    """The ATR a PC/SC reader builds for an ISO 14443-4 card (PC/SC Part 3 §3.1.3.2.3):
    3B 8n 80 01, the n historical bytes (ATS historical bytes, type A), and TCK, the XOR of
    every byte from T0 on."""
    if not 0 < len(historical) <= 15:
        raise ValueError("1 to 15 historical bytes")
    body = bytes((0x80 | len(historical), 0x80, 0x01)) + historical
    tck = 0
    for byte in body:
        tck ^= byte
    return b"\x3b" + body + bytes((tck,))


ATR = contactless_atr(HISTORICAL_BYTES)

# What the selected e-purse answers itself: INITIALIZE, DEBIT, CREDIT, GET TRANSACTION PROOF,
# GET BALANCE, READ RECORD (its transaction log).
EPURSE_COMMANDS = frozenset({0x50, 0x54, 0x52, 0x5A, 0x5C, READ_RECORD})



def _sw(sw: int) -> bytes:
    return sw.to_bytes(2, "big")


def _ok(data: bytes) -> bytes:
    return data + b"\x90\x00"


class VirtualCard:
    """One card in the field; ``process`` answers one command APDU."""

    def __init__(self, image: CardImage, state: CardState | None = None) -> None:
        self.image = image
        self.state = state if state is not None else CardState()
        for aid, app in image.apps.items():
            if aid.hex().upper() not in self.state.apps:
                self.state.app(aid).balance = app.app.balance
        self._selected: AppImage | None = None
        self._epurse: EpurseApplication | None = None
        self._fdda_record: bytes | None = None
        self._handlers: dict[int, Callable[[CommandApdu], bytes]] = {
            SELECT: self._select,
            GET_PROCESSING_OPTIONS: self._gpo,
            READ_RECORD: self._read_record,
            GET_DATA: self._get_data,
            GENERATE_AC: self._generate_ac,
            GET_BALANCE: self._get_balance,
        }

    @property
    def atr(self) -> bytes:
        """The ATR, without touching the card's state: a reader asks for it to see whether the
        card is still there (pcscd's presence poll over vpcd), not to reset it."""
        return ATR

    def power_on(self) -> bytes:
        """Field on (or reset): nothing selected; the ATR a reader would report."""
        self._selected = None
        self._epurse = None
        self._fdda_record = None
        return ATR

    def process(self, command: bytes) -> bytes:
        """Answer one command APDU with a response APDU (data + status word)."""
        try:
            apdu = CommandApdu.parse(command)
        except ApduError:
            return _sw(SW.WRONG_LENGTH)
        handler = self._handlers.get(apdu.ins)
        if self._epurse is not None and apdu.ins in EPURSE_COMMANDS:
            handler = self._epurse.process
        if handler is None:
            return _sw(SW.INS_NOT_SUPPORTED)
        try:
            return handler(apdu)
        except (TlvError, AppDataError, ValueError):
            return _sw(SW.WRONG_DATA)

    # --- commands -------------------------------------------------------------

    def _select(self, apdu: CommandApdu) -> bytes:
        """SELECT by DF name (ISO 7816-4): P2 00 the first application whose AID begins with
        the name given (a partial name selects an extended AID), P2 02 the next one after the
        current; 6A82 when there is none (left)."""
        if apdu.cla != 0x00 or apdu.p1 != 0x04 or apdu.p2 not in (0x00, 0x02):
            return _sw(SW.WRONG_P1P2)
        if not apdu.data:
            return _sw(SW.WRONG_LENGTH)
        current = self._selected
        self._fdda_record = None
        self._epurse = None
        self._selected = None
        if apdu.data == PPSE_NAME:
            return _ok(self.image.ppse_fci) if apdu.p2 == 0x00 else _sw(SW.FILE_NOT_FOUND)
        matches = [a for aid, a in self.image.apps.items() if aid.startswith(apdu.data)]
        if apdu.p2 == 0x02:  # next occurrence: after the current one, if it was among them
            after = matches.index(current) + 1 if current in matches else len(matches)
            matches = matches[after:]
        if not matches:
            return _sw(SW.FILE_NOT_FOUND)
        app = matches[0]
        self._selected = app
        if app.epurse is not None:
            self._epurse = EpurseApplication(app.epurse, self.state.app(app.app.aid))
        return _ok(app.fci)

    def _gpo(self, apdu: CommandApdu) -> bytes:
        app = self._selected
        if app is None or app.app.kind == "epurse":
            return _sw(SW.CONDITIONS_NOT_SATISFIED)
        if apdu.cla != 0x80:
            return _sw(SW.CLA_NOT_SUPPORTED)
        nodes = tlv.decode(apdu.data)
        if len(nodes) != 1 or nodes[0].tag != 0x83:
            return _sw(SW.WRONG_DATA)
        if len(nodes[0].value) != PDOL_DATA_SIZE:  # GPO without (all) its PDOL data
            return _sw(SW.WRONG_LENGTH)
        values = split_dol_data(list(PDOL), nodes[0].value)
        ttq = values[0x9F66]
        amount = bcd_amount(values[0x9F02])
        if not has_bit(ttq, TTQ_QPBOC):  # the reader does not support qPBOC/qVSDC
            return _sw(SW.CONDITIONS_NOT_SATISFIED)
        wants_sm = values[0xDF69] == b"\x01"
        uses_sm = app.scheme.name == "sm4" or self.image.profile.crypto.suite == "sm2"
        if uses_sm and not wants_sm:
            # An SM-only card on a terminal without SM: let the kernel try another interface.
            return _sw(SW.CONDITIONS_NOT_SATISFIED)

        st = self.state.app(app.app.aid)
        st.atc = (st.atc + 1) & 0xFFFF
        available = max(app.app.offline_spending_amount - st.offline_spent, 0)
        cid, ctq = _decide(ttq, app.app.online_only or amount > available)
        if cid == CID_TC:
            st.offline_spent += amount
            available -= amount
        cryptogram, iad = _cryptogram(app, st.atc, values, cid)
        st.log.append({"atc": st.atc, "amount": amount, "cid": cid})
        del st.log[:-10]  # a card keeps its last ten transactions

        objects: list[tuple[int, bytes]] = [
            (0x82, app.aip), (0x94, AFL), (0x9F36, st.atc.to_bytes(2, "big")),
            (0x9F26, cryptogram), (0x9F27, bytes((cid,))), (0x9F10, iad),
            (0x57, app.track2), (0x5F34, bytes.fromhex(self.image.profile.psn)),
        ]
        signs = cid == CID_TC or (cid == CID_ARQC and has_bit(ttq, TTQ_ODA_FOR_ONLINE))
        if app.oda is not None and signs:
            card_un = hashlib.sha256(app.card_key + st.atc.to_bytes(2, "big")).digest()[:4]
            card_auth = b"\x01" + card_un + ctq  # 9F69: fDDA version 01 || card UN || CTQ
            icc_dynamic = bytes((2,)) + st.atc.to_bytes(2, "big")
            ddol_data = values[0x9F37] + values[0x9F02] + values[0x5F2A] + card_auth
            objects.append((0x9F4B, app.oda.sign_dynamic_data(icc_dynamic, ddol_data)))
            self._fdda_record = tlv.encode([(0x70, [(0x9F69, card_auth)])])
        else:
            self._fdda_record = tlv.encode([(0x70, [(0x9F69, b"\x01" + bytes(4) + ctq)])])
        objects += [(0x9F6C, ctq), (0x9F5D, amount_bcd(available))]
        return _ok(tlv.encode([(0x77, objects)]))

    def _read_record(self, apdu: CommandApdu) -> bytes:
        app = self._selected
        if app is None:
            return _sw(SW.CONDITIONS_NOT_SATISFIED)
        if apdu.p2 & 0x07 != 0x04:
            return _sw(SW.WRONG_P1P2)
        key = (apdu.p2 >> 3, apdu.p1)
        if key == FDDA_RECORD:
            if self._fdda_record is None:
                return _sw(SW.CONDITIONS_NOT_SATISFIED)
            return _with_le(self._fdda_record, apdu.le)
        record = app.records.get(key)
        if record is None:
            return _sw(SW.RECORD_NOT_FOUND)
        return _with_le(record, apdu.le)

    def _get_data(self, apdu: CommandApdu) -> bytes:
        app = self._selected
        if app is None:
            return _sw(SW.CONDITIONS_NOT_SATISFIED)
        tag = (apdu.p1 << 8) | apdu.p2
        st = self.state.app(app.app.aid)
        if tag == 0x9F36:
            value = st.atc.to_bytes(2, "big")
        elif tag == 0x9F5D:
            value = amount_bcd(max(app.app.offline_spending_amount - st.offline_spent, 0))
        elif tag == 0x9F79 and app.app.kind == "epurse":
            value = amount_bcd(st.balance)
        else:
            return _sw(SW.REFERENCED_DATA_NOT_FOUND)
        return _ok(tlv.encode_one(tag, value))

    def _generate_ac(self, apdu: CommandApdu) -> bytes:
        app = self._selected
        if app is None or app.app.kind == "epurse":
            return _sw(SW.CONDITIONS_NOT_SATISFIED)
        values = split_dol_data(list(CDOL1), apdu.data)
        requested = apdu.p1 & 0xC0
        st = self.state.app(app.app.aid)
        st.atc = (st.atc + 1) & 0xFFFF
        # A card may lower what the terminal asks for, never raise it (Book 3 §9.3).
        if requested == CID_TC and app.app.online_only:
            cid = CID_ARQC
        elif requested in (CID_AAC, CID_TC, CID_ARQC):
            cid = requested
        else:
            return _sw(SW.WRONG_P1P2)
        cryptogram, iad = _cryptogram(app, st.atc, values, cid)
        return _ok(tlv.encode([(0x77, [
            (0x9F27, bytes((cid,))), (0x9F36, st.atc.to_bytes(2, "big")),
            (0x9F26, cryptogram), (0x9F10, iad),
        ])]))

    def _get_balance(self, apdu: CommandApdu) -> bytes:
        # The selected e-purse answers GET BALANCE itself (emv.epurse.application).
        return _sw(SW.CONDITIONS_NOT_SATISFIED)


def _with_le(data: bytes, le: int | None) -> bytes:
    """A READ RECORD answer as Le asks (ISO 7816-4): no Le field is a wrong length (6700); an
    Le short of the record gets 6Cxx with the exact length, to send again; Le 00 means up to
    256 bytes; a longer Le gets the record as it is."""
    if le is None:
        return _sw(SW.WRONG_LENGTH)
    if le != 0 and le < len(data):
        return bytes((0x6C, len(data) & 0xFF))
    return _ok(data)


def _decide(ttq: bytes, card_wants_online: bool) -> tuple[int, bytes]:
    """The card's cryptogram type and CTQ from the reader's TTQ (qPBOC card risk management).

    Online when the card wants it (online-only application, over its offline limit) or the
    reader requires an online cryptogram; an offline-only reader cannot go online, so there the
    card declines instead.  CVM required: online PIN if the reader can go online and take it
    (which makes the tap online), else signature if the reader takes one, else decline.  An
    ARQC tells a reader that does issuer update processing that the card supports it.
    """
    offline_only = has_bit(ttq, TTQ_OFFLINE_ONLY)
    online = card_wants_online or has_bit(ttq, TTQ_ONLINE_CRYPTOGRAM_REQUIRED)
    ctq = bytes(2)
    if has_bit(ttq, TTQ_CVM_REQUIRED):
        if has_bit(ttq, TTQ_ONLINE_PIN) and not offline_only:
            ctq, online = with_bits(ctq, CTQ_ONLINE_PIN), True
        elif has_bit(ttq, TTQ_SIGNATURE):
            ctq = with_bits(ctq, CTQ_SIGNATURE)
        else:
            return CID_AAC, ctq  # no CVM the reader can do
    if not online:
        return CID_TC, ctq
    if offline_only:
        return CID_AAC, ctq
    if has_bit(ttq, TTQ_ISSUER_UPDATE):
        ctq = with_bits(ctq, CTQ_ISSUER_UPDATE)
    return CID_ARQC, ctq


def _cryptogram(app: AppImage, atc: int, values: dict[int, bytes], cid: int) -> tuple[bytes, bytes]:
    """The application cryptogram and the IAD carrying its CVR (layouts in emv.appdata)."""
    cvr = bytes((0x03, cid | 0x20, 0x00, 0x00))
    cvn, algorithm = app.iad_template
    iad = IssuerApplicationData(dki=0x01, cvn=cvn, cvr=cvr, algorithm=algorithm).to_bytes()
    session_key = app.scheme.derive_session_key(app.card_key, atc)
    cryptogram = app.scheme.generate_ac(
        session_key, ac_input(ac_terminal_data(values), app.aip, atc, cvr)
    )
    return cryptogram, iad
