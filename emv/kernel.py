"""The reader's contactless kernel as a sans-I/O state machine (in the manner of h11).

The kernel never touches a reader, a socket or a clock.  It is created with the
terminal's configuration and this transaction's inputs (amount, date,
unpredictable number), hands out the next command APDU, and is fed each response::

    kernel = Kernel(config, txn)
    step = kernel.start()
    while isinstance(step, Send):
        step = kernel.receive(transceive(step.apdu))
    result = step.result          # Finished: outcome + transaction record

The same kernel then runs against the in-process virtual card, PC/SC, vpcd,
SimPy time and a benchmark.  Every problem (a malformed answer, a bad status
word, a failed signature) ends the transaction with a defined outcome and a
reason string; ``receive`` does not raise on anything a card can send.

Flow (qPBOC/qUICS, EMV Book C-7 in spirit): SELECT PPSE -> choose the
application by the terminal's priority -> SELECT AID -> GPO with the PDOL filled
from the terminal's data (DF69 = 01 when the terminal does SM) -> READ RECORD over
the AFL -> processing restrictions (effective and expiry dates) -> fDDA (RSA or
SM2) -> outcome from the card's cryptogram type.

When the terminal's priority picks the T-Union e-purse (and the terminal has a PSAM), the
kernel hands the transaction over to the e-purse purchase machine
(``emv.epurse.purchase.PurchaseFlow``, sans-I/O like this one) right after SELECT, and maps
its end: approved/declined as they are, a fallback (balance short, e-purse expired...)
to the next application in priority order (QuickPass), or, with none left, a decline that
says why.  The PSAM is given to the kernel per tap; it is the terminal's object, not I/O.

The caller may also give the kernel a ``screen``: a predicate on the card's PAN token
(``token -> refusal reason or None``) asked once, as soon as an e-purse tap has named its card
and before any purchase command goes out.  An e-purse tap pays on the card *during* the tap
(DEBIT FOR PURCHASE), so a validator that only looked at the deny list or its duplicate
filter after the kernel had finished would let a deny-listed card or a second tap of the
same rider pay anyway; with the screen the tap ends declined, nothing debited.  QuickPass
taps move no money at the tap (the back office charges later), so the validator still
decides after the kernel there, and the screen is not asked.  The screen is the caller's
pure function of its own state: the kernel stays free of I/O.

A card that leaves the field is reported by the transport raising ``CardRemoved``; ``run``
turns that into ``kernel.card_removed()``: outcome try-again (EMV's "present card again"),
with an e-purse purchase whose DEBIT was sent kept pending in the PSAM for the next tap.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from emv import tlv
from emv.apdu import SW, CommandApdu, ResponseApdu, get_processing_options, read_record, select
from emv.appdata import AC_TERMINAL_TAGS, CID_AAC, CID_ARQC, CID_TC, bcd_amount
from emv.dol import DolEntry, build_dol, parse_dol
from emv.epurse.messages import datetime_bcd
from emv.epurse.psam import Psam
from emv.epurse.purchase import EpurseRecord, FlowEnd, FlowKind, PurchaseFlow
from emv.oda import CaKeys, OdaFailure, verify_fdda
from emv.pan import PanError, mask_pan, pan_token
from emv.qualifiers import (
    CTQ_ISSUER_UPDATE,
    CTQ_ONLINE_PIN,
    CTQ_SIGNATURE,
    TTQ_ISSUER_UPDATE,
    TTQ_OFFLINE_ONLY,
    has_bit,
)
from emv.tlv import TlvError

PPSE = b"2PAY.SYS.DDF01"
UNIONPAY_DEBIT = bytes.fromhex("A000000333010101")
UNIONPAY_CREDIT = bytes.fromhex("A000000333010102")
UNIONPAY_QUASI_CREDIT = bytes.fromhex("A000000333010103")
T_UNION_EPURSE = bytes.fromhex("A000000632010105")
EPURSE_AIDS = frozenset({T_UNION_EPURSE})
QUICKPASS_FIRST = (UNIONPAY_DEBIT, UNIONPAY_CREDIT, UNIONPAY_QUASI_CREDIT)
EPURSE_FIRST = (T_UNION_EPURSE, *QUICKPASS_FIRST)
"""A terminal that prefers the e-purse and falls back to QuickPass."""


class Outcome(StrEnum):
    APPROVED_OFFLINE = "approved-offline"
    ONLINE_REQUEST = "online-request"
    DECLINED = "declined"
    TRY_ANOTHER_INTERFACE = "try-another-interface"
    END_APPLICATION = "end-application"
    TRY_AGAIN = "try-again"  # the card left the field: present it again


@dataclass(frozen=True)
class TerminalConfig:
    """What a validator is: its qualifiers, country and currency, and what it trusts."""

    ca_keys: CaKeys
    token_key: bytes
    # TTQ 27000000: byte 1 = qPBOC supported (0x20), online PIN (0x04) and signature (0x02)
    # supported, ODA for online authorizations (0x01); online capable (0x08 clear); byte 2: no
    # online cryptogram required, no CVM required; byte 3: no issuer update.  A transit
    # validator wants the card's offline approval (TC) with fDDA, and fDDA on an ARQC too.
    ttq: bytes = bytes.fromhex("27000000")
    country: bytes = bytes.fromhex("0156")
    currency: bytes = bytes.fromhex("0156")
    sm_supported: bool = True
    # The terminal's application priority: first listed wins; unlisted AIDs are not used.
    # The e-purse is used only when listed here and the kernel is given a PSAM.
    aid_priority: tuple[bytes, ...] = QUICKPASS_FIRST
    max_records: int = 16
    # Application Selection Indicator per AID (EMV Book B, Entry Point): an AID listed here
    # also matches a card's ADF name that begins with it (partial match: issuers extend the
    # scheme's AID with their own suffix), and the kernel then selects the card's full name;
    # every other AID of ``aid_priority`` must match exactly.  The QuickPass AIDs match
    # partially by default, as UnionPay's terminal parameters set them; the e-purse exactly.
    partial_aids: frozenset[bytes] = frozenset(QUICKPASS_FIRST)

    def match_aid(self, adf_name: bytes) -> int | None:
        """The priority index of the terminal AID a card's ADF name matches, or None."""
        for index, aid in enumerate(self.aid_priority):
            if adf_name == aid or (aid in self.partial_aids and adf_name.startswith(aid)):
                return index
        return None


@dataclass(frozen=True)
class TransactionInput:
    """This tap's inputs; the caller supplies the date and randomness (no clock here)."""

    amount: int
    date: dt.date
    unpredictable_number: bytes
    amount_other: int = 0
    transaction_type: int = 0x00
    # The tap's local time (timezone-aware, on ``date``): the e-purse records its wall-clock
    # digits.  None: midnight of ``date``.
    at: dt.datetime | None = None

    def __post_init__(self) -> None:
        if len(self.unpredictable_number) != 4:
            raise ValueError("unpredictable number is 4 bytes")
        if not 0 <= self.amount < 10**12 or not 0 <= self.amount_other < 10**12:
            raise ValueError("amounts are 0 to 999999999999 minor units")
        if self.at is not None:
            if self.at.tzinfo is None or self.at.utcoffset() is None:
                raise ValueError("the tap time must be timezone-aware")
            if self.at.date() != self.date:
                raise ValueError("the tap time must fall on the transaction date")

    @property
    def wall_clock(self) -> dt.datetime:
        """The local date and time a card records (naive)."""
        if self.at is None:
            return dt.datetime.combine(self.date, dt.time())
        return self.at.replace(tzinfo=None)


@dataclass
class TapResult:
    """The transaction record: what the validator shows, journals and sends on."""

    outcome: Outcome
    reason: str | None = None
    aid: str | None = None
    label: str | None = None
    oda: str = "none"
    oda_ok: bool | None = None
    atc: int | None = None
    cid: int | None = None
    cryptogram: str | None = None
    iad: str | None = None
    aip: str | None = None  # 82, hex: part of the AC input the issuer rebuilds (emv.appdata)
    pan_masked: str | None = None
    pan_token: str | None = None
    psn: str | None = None
    expiry: str | None = None
    tvr: str = "0000000000"
    available_offline: int | None = None
    holder_category: str | None = None
    holder_birth_date: str | None = None
    ac_data: dict[str, str] = field(default_factory=dict)  # terminal data the AC covers, hex
    # e-purse (T-Union) purchase: balances, the card's offline serial, TAC, PSAM and its serial
    epurse_balance_before: int | None = None
    epurse_balance_after: int | None = None
    epurse_serial: int | None = None
    epurse_tac: str | None = None
    epurse_mac2_ok: bool | None = None
    psam_id: str | None = None
    psam_serial: int | None = None
    epurse_recovered: dict[str, Any] | None = None  # a torn purchase settled on this tap
    epurse_fallback: str | None = None  # why the e-purse was not used, when it was tried
    # For clearing (T-Union clearing files carry them): the e-purse's issuer id (city code),
    # application serial number (the e-purse's card number, not a bank PAN: it diversifies
    # the TAC key), key version, algorithm id and the date-time digits the TAC covers.
    epurse_issuer: str | None = None
    epurse_card_number: str | None = field(default=None, repr=False)
    epurse_key_version: int | None = None
    epurse_algorithm_id: int | None = None
    epurse_when: str | None = None
    # The CVM the card asked for in its CTQ (online-pin, signature) or None; and whether an
    # online request may carry issuer update processing (card and reader both support it).
    cvm: str | None = None
    issuer_update: bool = False


@dataclass(frozen=True)
class Send:
    """The next command to send to the card."""

    apdu: bytes


@dataclass(frozen=True)
class Finished:
    result: TapResult


Step = Send | Finished


class _Stage(StrEnum):
    IDLE = "idle"
    SELECT_PPSE = "select-ppse"
    SELECT_AID = "select-aid"
    GPO = "gpo"
    READ_RECORDS = "read-records"
    EPURSE = "epurse"
    DONE = "done"


class CardRemoved(Exception):  # noqa: N818 - an event, named as the transport reports it
    """Raised by a transport when the card left the field (no answer will come)."""


class _End(Exception):  # noqa: N818 - internal control flow, never escapes the kernel
    def __init__(self, outcome: Outcome, reason: str) -> None:
        self.outcome = outcome
        self.reason = reason


# What a GPO answer must carry, with the exact length where EMV fixes one (0: any).  The AFL
# (94) is not among them: qPBOC (and Book C-3) let a card that asks to go online leave it out,
# with track 2 in the GPO answer, since there is nothing the terminal must read for that.
_GPO_MANDATORY = ((0x82, 2), (0x9F36, 2), (0x9F26, 8))


# TVR bits used here (byte index, mask).
TVR_ODA_NOT_PERFORMED = (0, 0x80)
TVR_DDA_FAILED = (0, 0x08)
TVR_EXPIRED = (1, 0x40)
TVR_NOT_EFFECTIVE = (1, 0x20)


Screen = Callable[[str], str | None]
"""The caller's check of an identified card: PAN token in, refusal reason (or None) out."""


class Kernel:
    """One transaction; make a new kernel for the next tap."""

    def __init__(self, config: TerminalConfig, txn: TransactionInput,
                 psam: Psam | None = None, *, screen: Screen | None = None) -> None:
        self.config = config
        self.txn = txn
        self.psam = psam
        self.screen = screen
        self._flow: PurchaseFlow | None = None
        self._stage = _Stage.IDLE
        self._candidates: list[tuple[bytes, str, bytes]] = []  # ADF name, label, terminal AID
        self._configured_aid = b""
        self._tvr = bytearray(5)
        self._result = TapResult(outcome=Outcome.END_APPLICATION)
        self._terminal_values: dict[int, bytes] = {}
        self._card: dict[int, bytes] = {}
        self._gpo_nodes: list[tlv.Tlv] = []
        self._reads: list[tuple[int, int, bool]] = []
        self._static_data = bytearray()
        self._static_ok = True

    @property
    def stage(self) -> str:
        return self._stage.value

    def start(self) -> Step:
        if self._stage is not _Stage.IDLE:
            raise RuntimeError("a kernel runs one transaction; make a new one")
        self._stage = _Stage.SELECT_PPSE
        return Send(select(PPSE).to_bytes())

    def receive(self, response: bytes) -> Step:
        """Feed the card's answer to the last command; get the next step."""
        if self._stage in (_Stage.IDLE, _Stage.DONE):
            raise RuntimeError(f"no command is outstanding (stage {self._stage.value})")
        try:
            rapdu = ResponseApdu.parse(response)
            handler = _HANDLERS[self._stage]
            return handler(self, rapdu)
        except _End as end:
            return self._finish(end.outcome, end.reason)
        except TlvError as exc:
            return self._finish(Outcome.END_APPLICATION, f"malformed-response: {exc}")
        except ValueError as exc:  # ApduError and data errors from the card's answer
            return self._finish(Outcome.END_APPLICATION, f"malformed-response: {exc}")

    def card_removed(self) -> Finished:
        """The transport lost the card before it answered the last command."""
        if self._stage in (_Stage.IDLE, _Stage.DONE):
            raise RuntimeError(f"no command is outstanding (stage {self._stage.value})")
        if self._stage is _Stage.EPURSE and self._flow is not None:
            return self._finish(Outcome.TRY_AGAIN, self._flow.card_removed().reason)
        return self._finish(Outcome.TRY_AGAIN, "card-removed")

    # --- stages -----------------------------------------------------------------

    def _on_ppse(self, r: ResponseApdu) -> Step:
        if r.sw == SW.FILE_NOT_FOUND:
            raise _End(Outcome.TRY_ANOTHER_INTERFACE, "no-ppse")
        if not r.ok:
            raise _End(Outcome.END_APPLICATION, f"ppse-status-{r.sw:04X}")
        fci = tlv.decode(r.data)
        listed: list[tuple[int, int, bytes, str, bytes]] = []
        for entry in tlv.find_all(fci, 0x61):
            aid = entry.find(0x4F)
            if aid is None:
                continue
            prio = entry.find(0x87)
            label = entry.find(0x50)
            card_prio = prio.value[0] & 0x0F if prio is not None and prio.value else 15
            term_prio = self.config.match_aid(aid.value)
            if term_prio is None:
                continue
            configured = self.config.aid_priority[term_prio]
            if configured in EPURSE_AIDS and self.psam is None:
                continue  # no PSAM, no e-purse purchase
            name = label.value.decode("ascii", "replace") if label is not None else ""
            listed.append((term_prio, card_prio, aid.value, name, configured))
        if not listed:
            raise _End(Outcome.END_APPLICATION, "no-supported-application")
        listed.sort()
        self._candidates = [(aid, name, configured) for _, _, aid, name, configured in listed]
        return self._select_next()

    def _select_next(self) -> Step:
        if not self._candidates:
            raise _End(Outcome.TRY_ANOTHER_INTERFACE, "no-application-accepted")
        aid, label, configured = self._candidates.pop(0)
        self._configured_aid = configured
        self._result.aid = aid.hex().upper()
        self._result.label = label
        self._stage = _Stage.SELECT_AID
        return Send(select(aid).to_bytes())

    def _on_select_aid(self, r: ResponseApdu) -> Step:
        if not r.ok:
            return self._select_next()
        if self._configured_aid in EPURSE_AIDS and self.psam is not None:
            self._flow = PurchaseFlow(self.psam, self.txn.amount,
                                      datetime_bcd(self.txn.wall_clock), self.txn.date)
            self._stage = _Stage.EPURSE
            step = self._flow.start(r.data)
            if isinstance(step, bytes):
                refusal = self._screen_epurse(self._flow.record)
                if refusal is not None:  # before INITIALIZE / DEBIT: nothing is paid
                    raise _End(Outcome.DECLINED, refusal)
            return self._epurse_step(step)
        fci = tlv.decode(r.data)
        pdol_node = tlv.find(fci, 0x9F38)
        pdol = parse_dol(pdol_node.value) if pdol_node is not None else []
        self._terminal_values = self._terminal_data()
        data = build_dol(pdol, self._terminal_values)
        self._pdol = pdol
        self._stage = _Stage.GPO
        return Send(get_processing_options(data).to_bytes())

    def _on_gpo(self, r: ResponseApdu) -> Step:
        if r.sw == SW.CONDITIONS_NOT_SATISFIED:
            return self._select_next()
        if not r.ok:
            raise _End(Outcome.END_APPLICATION, f"gpo-status-{r.sw:04X}")
        nodes = tlv.decode(r.data)
        if len(nodes) != 1 or nodes[0].tag not in (0x77, 0x80):
            raise _End(Outcome.END_APPLICATION, "gpo-not-a-response-template")
        if nodes[0].tag == 0x80:  # format 1: AIP || AFL
            raw = nodes[0].value
            if len(raw) < 2 or (len(raw) - 2) % 4:
                raise _End(Outcome.END_APPLICATION, "gpo-format-1-malformed")
            self._card = {0x82: raw[:2], 0x94: raw[2:]}
        else:
            self._gpo_nodes = list(nodes)
            self._card = tlv.flatten(nodes)
        for tag, size in _GPO_MANDATORY:
            if tag not in self._card:
                raise _End(Outcome.END_APPLICATION, f"missing-{tlv.tag_hex(tag)}")
            if size and len(self._card[tag]) != size:
                raise _End(Outcome.END_APPLICATION, f"bad-length-{tlv.tag_hex(tag)}")
        afl = self._card.get(0x94, b"")
        self._reads = _parse_afl(afl, self.config.max_records) if afl else []
        return self._next_read()

    def _next_read(self) -> Step:
        if not self._reads:
            return self._complete()
        sfi, rec, _ = self._reads[0]
        self._stage = _Stage.READ_RECORDS
        return Send(read_record(sfi, rec).to_bytes())

    def _on_record(self, r: ResponseApdu) -> Step:
        sfi, rec, for_oda = self._reads.pop(0)
        if not r.ok:
            raise _End(Outcome.END_APPLICATION, f"read-record-{sfi}.{rec}-status-{r.sw:04X}")
        nodes = tlv.decode(r.data)
        if len(nodes) != 1 or nodes[0].tag != 0x70:
            if for_oda:
                self._static_ok = False
            raise _End(Outcome.END_APPLICATION, f"record-{sfi}.{rec}-not-a-70-template")
        if for_oda:
            self._static_data += nodes[0].value
        for tag, value in tlv.flatten(nodes).items():
            self._card.setdefault(tag, value)
        return self._next_read()

    # --- e-purse ------------------------------------------------------------------

    def _on_epurse(self, r: ResponseApdu) -> Step:
        assert self._flow is not None  # the EPURSE stage starts with the flow
        return self._epurse_step(self._flow.receive(r))

    def _epurse_step(self, step: bytes | FlowEnd) -> Step:
        if isinstance(step, bytes):
            return Send(step)
        return self._epurse_end(step)

    def _epurse_end(self, end: FlowEnd) -> Finished | Send:
        self._apply_epurse(end.record)
        if end.kind is FlowKind.FALLBACK:
            self._result.epurse_fallback = end.reason
            if not self._candidates:  # nothing to fall back to: say why the e-purse refused
                raise _End(Outcome.DECLINED, end.reason or "epurse-refused")
            return self._select_next()
        outcome = {FlowKind.APPROVED: Outcome.APPROVED_OFFLINE, FlowKind.DECLINED: Outcome.DECLINED,
                   FlowKind.ENDED: Outcome.END_APPLICATION,
                   FlowKind.TRY_AGAIN: Outcome.TRY_AGAIN}[end.kind]
        return self._finish(outcome, end.reason)

    def _screen_epurse(self, rec: EpurseRecord) -> str | None:
        """The caller's verdict on the e-purse's card, asked before anything is debited."""
        if self.screen is None or rec.card_number is None:
            return None
        try:
            token = pan_token(rec.card_number.lstrip("0"), self.config.token_key)
        except PanError:
            return None  # not a card number the validator could list: the purchase decides
        return self.screen(token)

    def _apply_epurse(self, rec: EpurseRecord) -> None:
        res = self._result
        res.epurse_balance_before = rec.balance_before
        res.epurse_balance_after = rec.balance_after
        res.epurse_serial = rec.card_serial
        res.epurse_tac = rec.tac
        res.epurse_mac2_ok = rec.mac2_ok
        res.psam_id = rec.psam_id
        res.psam_serial = rec.psam_serial
        res.epurse_recovered = rec.recovered
        res.epurse_issuer = rec.issuer
        res.epurse_card_number = rec.card_number
        res.epurse_key_version = rec.key_version
        res.epurse_algorithm_id = rec.algorithm_id
        res.epurse_when = rec.when
        if rec.card_number is not None:
            try:
                res.pan_masked = mask_pan(rec.card_number.lstrip("0"))
                res.pan_token = pan_token(rec.card_number.lstrip("0"), self.config.token_key)
            except PanError:
                res.pan_masked = res.pan_token = None

    # --- completion ---------------------------------------------------------------

    def _complete(self) -> Step:
        card, res = self._card, self._result
        res.atc = int.from_bytes(card[0x9F36], "big")
        res.cryptogram = card[0x9F26].hex().upper()
        if 0x9F10 in card:
            res.iad = card[0x9F10].hex().upper()
        if 0x82 in card:
            res.aip = card[0x82].hex().upper()
        res.ac_data = {tlv.tag_hex(t): self._terminal_values[t].hex().upper()
                       for t in AC_TERMINAL_TAGS if t in self._terminal_values}
        pan = card.get(0x5A) or _pan_from_track2(card.get(0x57))
        if pan is None:
            raise _End(Outcome.END_APPLICATION, "missing-pan")
        try:
            res.pan_masked = mask_pan(pan)
            res.pan_token = pan_token(pan, self.config.token_key)
        except PanError as exc:
            raise _End(Outcome.END_APPLICATION, f"bad-pan: {exc}") from None
        if 0x5F34 in card:
            res.psn = card[0x5F34].hex()
        if 0x9F5D in card:
            try:
                res.available_offline = bcd_amount(card[0x9F5D])
            except ValueError:
                res.available_offline = None
        if 0xDF70 in card:
            res.holder_category = card[0xDF70].decode("ascii", "replace")
        if 0xDF71 in card:
            res.holder_birth_date = card[0xDF71].hex()

        cid = _cid(card)
        res.cid = cid
        ctq = card.get(0x9F6C, b"")
        res.cvm = _cvm(ctq)
        res.issuer_update = (has_bit(ctq, CTQ_ISSUER_UPDATE)
                             and has_bit(self.config.ttq, TTQ_ISSUER_UPDATE))
        # Processing restrictions (Book 3 §10.4): dates.
        today = self.txn.date
        expiry = _bcd_date(card.get(0x5F24))
        effective = _bcd_date(card.get(0x5F25))
        if expiry is not None:
            res.expiry = expiry.isoformat()
        if expiry is not None and today > expiry:
            self._set(TVR_EXPIRED)
            raise _End(Outcome.DECLINED, "card-expired")
        if effective is not None and today < effective:
            self._set(TVR_NOT_EFFECTIVE)
            raise _End(Outcome.DECLINED, "card-not-yet-effective")
        if cid == CID_AAC:
            raise _End(Outcome.DECLINED, "card-declined")

        # Offline data authentication: fDDA when the card supports DDA and signed this tap.
        aip = card[0x82]
        if aip[0] & 0x20 and 0x9F4B in card:
            ddol = (self._terminal_values[0x9F37] + self._terminal_values[0x9F02]
                    + self._terminal_values[0x5F2A] + card.get(0x9F69, b""))
            static = bytes(self._static_data) + (aip if card.get(0x9F4A) == b"\x82" else b"")
            aid = bytes.fromhex(res.aid or "")
            try:
                res.oda = verify_fdda(
                    self.config.ca_keys, aid[:5], card, static, ddol, today,
                    sm_allowed=self.config.sm_supported,
                )
                res.oda_ok = True
            except OdaFailure as exc:
                res.oda = exc.method
                res.oda_ok = False
                self._set(TVR_DDA_FAILED)
                raise _End(Outcome.DECLINED, f"oda-failed: {exc.reason}") from None
        else:
            self._set(TVR_ODA_NOT_PERFORMED)
            if cid == CID_TC:
                raise _End(Outcome.DECLINED, "offline-approval-without-oda")
        if cid == CID_TC:
            return self._finish(Outcome.APPROVED_OFFLINE, None)
        if cid == CID_ARQC:
            if has_bit(self.config.ttq, TTQ_OFFLINE_ONLY):
                raise _End(Outcome.DECLINED, "online-request-on-offline-only-reader")
            return self._finish(Outcome.ONLINE_REQUEST, None)
        raise _End(Outcome.END_APPLICATION, f"unknown-cid-{cid:02X}")

    def _finish(self, outcome: Outcome, reason: str | None) -> Finished:
        if self._stage is _Stage.EPURSE and self._flow is not None:
            self._apply_epurse(self._flow.record)  # what the purchase got to, even if cut short
        self._stage = _Stage.DONE
        self._result.outcome = outcome
        self._result.reason = reason
        self._result.tvr = bytes(self._tvr).hex().upper()
        return Finished(self._result)

    def _set(self, bit: tuple[int, int]) -> None:
        self._tvr[bit[0]] |= bit[1]

    def _terminal_data(self) -> dict[int, bytes]:
        t, c = self.txn, self.config
        ttq = bytearray(c.ttq)
        return {
            0x9F66: bytes(ttq),
            0x9F02: bytes.fromhex(f"{t.amount:012d}"),
            0x9F03: bytes.fromhex(f"{t.amount_other:012d}"),
            0x9F1A: c.country,
            0x95: bytes(self._tvr),
            0x5F2A: c.currency,
            0x9A: bytes.fromhex(t.date.strftime("%y%m%d")),
            0x9C: bytes((t.transaction_type,)),
            0x9F37: t.unpredictable_number,
            0xDF69: b"\x01" if c.sm_supported else b"\x00",
            0x9F35: b"\x22",
            0x9F33: bytes.fromhex("E0E1C8"),
        }


_HANDLERS: Mapping[_Stage, Callable[[Kernel, ResponseApdu], Step]] = {
    _Stage.SELECT_PPSE: Kernel._on_ppse,
    _Stage.SELECT_AID: Kernel._on_select_aid,
    _Stage.GPO: Kernel._on_gpo,
    _Stage.READ_RECORDS: Kernel._on_record,
    _Stage.EPURSE: Kernel._on_epurse,
}


def _parse_afl(afl: bytes, limit: int) -> list[tuple[int, int, bool]]:
    if len(afl) % 4:
        raise _End(Outcome.END_APPLICATION, "afl-length-not-multiple-of-4")
    reads: list[tuple[int, int, bool]] = []
    for i in range(0, len(afl), 4):
        sfi, first, last, oda = afl[i] >> 3, afl[i + 1], afl[i + 2], afl[i + 3]
        if not 1 <= sfi <= 30 or afl[i] & 0x07 or first == 0 or last < first \
                or oda > last - first + 1:
            raise _End(Outcome.END_APPLICATION, f"afl-entry-{i // 4}-invalid")
        for rec in range(first, last + 1):
            reads.append((sfi, rec, rec < first + oda))
    if len(reads) > limit:
        raise _End(Outcome.END_APPLICATION, f"afl-asks-{len(reads)}-records")
    return reads


def _cid(card: Mapping[int, bytes]) -> int:
    raw = card.get(0x9F27)
    if raw:
        return raw[0] & 0xC0
    iad = card.get(0x9F10, b"")  # qPBOC may leave 9F27 out: the CVR in the IAD says it
    return iad[4] & 0xC0 if len(iad) > 4 else CID_ARQC


def _cvm(ctq: bytes) -> str | None:
    if has_bit(ctq, CTQ_ONLINE_PIN):
        return "online-pin"
    if has_bit(ctq, CTQ_SIGNATURE):
        return "signature"
    return None


def _pan_from_track2(track2: bytes | None) -> str | None:
    if not track2:
        return None
    digits = track2.hex().upper()
    return digits.split("D", 1)[0] if "D" in digits else None


def _bcd_date(raw: bytes | None) -> dt.date | None:
    if raw is None:
        return None
    try:
        text = raw.hex()
        return dt.date(2000 + int(text[0:2]), int(text[2:4]), int(text[4:6]))
    except ValueError:
        raise _End(Outcome.END_APPLICATION, "malformed-date") from None


@dataclass
class Exchange:
    command: bytes
    response: bytes


def run(kernel: Kernel, transceive: Callable[[bytes], bytes],
        trace: list[Exchange] | None = None) -> TapResult:
    """Drive a kernel to its end against any transport (a callable sending one APDU, raising
    ``CardRemoved`` when the card leaves the field)."""
    step = kernel.start()
    while isinstance(step, Send):
        try:
            response = transceive(step.apdu)
        except CardRemoved:
            return kernel.card_removed().result
        if trace is not None:
            trace.append(Exchange(step.apdu, response))
        step = kernel.receive(response)
    return step.result


__all__ = [
    "EPURSE_AIDS", "EPURSE_FIRST", "PPSE", "QUICKPASS_FIRST", "T_UNION_EPURSE", "UNIONPAY_CREDIT",
    "UNIONPAY_DEBIT", "UNIONPAY_QUASI_CREDIT", "CardRemoved", "CommandApdu", "DolEntry", "Exchange",
    "Finished", "Kernel", "Outcome", "Screen", "Send", "TapResult", "TerminalConfig",
    "TransactionInput", "run",
]
