"""The validator: one tap from card to outcome, journal first.

``Validator.tap(reader)`` runs the kernel over the reader, makes the local decisions
(:mod:`terminal.decisions`), builds the wire :class:`~wire.messages.TapRecord`, writes it
to the journal (durably), and only then shows the outcome.  The MQTT uplink reads the
journal on its own schedule; a tap never waits for the network.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from emv import tlv
from emv.appdata import (
    AC_TERMINAL_TAGS,
    ALGORITHM_SM4,
    ALGORITHM_TDES,
    AppDataError,
    IssuerApplicationData,
    ac_input,
)
from emv.epurse.messages import parse_datetime_bcd
from emv.epurse.psam import Psam
from emv.kernel import (
    EPURSE_AIDS,
    Kernel,
    Outcome,
    TapResult,
    TerminalConfig,
    TransactionInput,
    run,
)
from emv.tlv import TlvError
from terminal.decisions import (
    Display,
    RiderRules,
    TapPolicy,
    Verdict,
    decide,
    display_for,
    display_for_error,
    is_duplicate,
    rider_category,
)
from terminal.denylist import DenyList
from terminal.journal import Journal
from terminal.readers import Reader, ReaderError
from wire.codec import encode
from wire.messages import Action, Method, TapOutcome, TapRecord
from wire.topics import check_validator_id

log = logging.getLogger("tapsim.terminal")

GPO_INS = 0xA8
SCHEMES = {ALGORITHM_TDES: "tdes", ALGORITHM_SM4: "sm4"}
DEFAULT_FARE_MEDIA: Mapping[str, str] = MappingProxyType({
    "A000000333010101": "unionpay-quickpass",
    "A000000333010102": "unionpay-quickpass",
    "A000000333010103": "unionpay-quickpass",
    "A000000632010105": "tunion-epurse",
})

# A stop and route of the shipped sample fare feed `city` (fare/samples/city: stop S01 on
# route 1), the back office's default feed, so a validator left on its defaults sends taps
# the back office can price.
SAMPLE_STOP = "S01"
SAMPLE_ROUTE = "1"


@dataclass(frozen=True)
class ValidatorConfig:
    """Who and where the validator is, and its rules."""

    validator_id: str
    operator_id: str = "OP1"
    stop_id: str = SAMPLE_STOP
    route_id: str = SAMPLE_ROUTE
    action: Action = Action.TAP
    amount: int = 200  # the nominal fare the kernel offers the card (fen)
    currency: str = "CNY"
    timezone: dt.tzinfo = field(default=ZoneInfo("Asia/Shanghai"))
    policy: TapPolicy = field(default_factory=TapPolicy)
    rider_rules: RiderRules = field(default_factory=RiderRules)
    fare_media: Mapping[str, str] = field(default_factory=lambda: DEFAULT_FARE_MEDIA)

    def __post_init__(self) -> None:
        check_validator_id(self.validator_id)
        if self.amount < 0:
            raise ValueError("amount must not be negative")


@dataclass(frozen=True)
class TapEvent:
    """What happened at one tap (``record`` is None when no card was read)."""

    verdict: Verdict | None
    display: Display
    result: TapResult | None
    record: TapRecord | None
    kernel_s: float
    journal_s: float


class DuplicateFilter:
    """Last accepted time per token at this validator, pruned to the window."""

    def __init__(self, window: dt.timedelta) -> None:
        self.window = window
        self._last: dict[str, dt.datetime] = {}

    def last(self, token: str) -> dt.datetime | None:
        return self._last.get(token)

    def remember(self, token: str, when: dt.datetime) -> None:
        self._last[token] = when
        if len(self._last) > 4096:
            cutoff = when - self.window
            self._last = {t: w for t, w in self._last.items() if w >= cutoff}

    def load(self, recent: Mapping[str, dt.datetime]) -> None:
        self._last.update(recent)


class Validator:
    """A validator; ``tap`` is synchronous and uses the journal from one thread at a time."""

    def __init__(self, config: ValidatorConfig, terminal: TerminalConfig, journal: Journal,
                 deny_list: DenyList, *,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
                 unpredictable: Callable[[], bytes] = lambda: secrets.token_bytes(4),
                 fare_version: Callable[[], int] = lambda: 0,
                 show: Callable[[Display], None] | None = None,
                 on_journaled: Callable[[TapRecord], None] | None = None,
                 before_journal: Callable[[], None] | None = None,
                 psam: Psam | None = None) -> None:
        self.config = config
        self.psam = psam  # with EPURSE_FIRST in the terminal config: T-Union purchases
        self.terminal = terminal
        self.journal = journal
        self.deny_list = deny_list
        self.clock = clock
        self.unpredictable = unpredictable
        self.fare_version = fare_version
        self.show = show
        self.on_journaled = on_journaled
        # Called after every card session, before its tap is journaled or shown: where a
        # simulated card's counters (ATC) and the PSAM's serial are saved, so no crash can
        # make them offer a value the back office has already seen.
        self.before_journal = before_journal
        self.duplicates = DuplicateFilter(config.policy.duplicate_window)
        now = clock()
        # A restarted validator still knows who tapped a moment ago.
        self.duplicates.load(journal.recent_tokens(now - config.policy.duplicate_window,
                                                   TapOutcome.ACCEPTED.value))

    def tap(self, reader: Reader) -> TapEvent:
        t0 = time.perf_counter()
        now = self.clock()
        local = now.astimezone(self.config.timezone)
        gpo: list[bytes] = []

        def transceive(apdu: bytes) -> bytes:
            response = reader.transceive(apdu)  # CardGoneError ends the kernel as try-again
            if len(apdu) > 1 and apdu[1] == GPO_INS:
                gpo.append(response)
            return response

        try:
            reader.power_on()
        except ReaderError as exc:
            log.debug("no tap: %s", exc)
            return self._shown(TapEvent(None, display_for_error(), None, None,
                                        time.perf_counter() - t0, 0.0))
        screened: list[Verdict] = []

        def screen(token: str) -> str | None:
            # Asked by the kernel before an e-purse DEBIT: refuse now or the card pays.
            verdict = self._screen(token, now)
            if verdict is not None:
                screened.append(verdict)
                return verdict.reason
            return None

        try:
            txn = TransactionInput(amount=self.config.amount, date=local.date(),
                                   unpredictable_number=self.unpredictable(), at=local)
            result = run(Kernel(self.terminal, txn, self.psam, screen=screen), transceive)
        finally:
            reader.power_off()
            if self.before_journal is not None:
                self.before_journal()  # counters may have moved even if the kernel failed
        kernel_s = time.perf_counter() - t0
        token = result.pan_token
        epurse = bytes.fromhex(result.aid or "") in EPURSE_AIDS
        if result.outcome is Outcome.TRY_AGAIN or token is None \
                or (not epurse and (result.cryptogram is None or result.atc is None or not gpo)):
            # The card left, or was not read far enough to identify it: nothing to journal.
            verdict = decide(result, deny_listed=False, duplicate=False,
                             policy=self.config.policy)
            return self._shown(TapEvent(verdict, display_for_error(), result, None, kernel_s, 0.0))

        # E-purse taps were screened before the DEBIT (deny list, duplicates); a purchase
        # that completed has taken the fare from the card and stands.
        paid = epurse and result.outcome is Outcome.APPROVED_OFFLINE
        if screened and result.outcome is Outcome.DECLINED:
            verdict = screened[0]
        else:
            last = self.duplicates.last(token)
            verdict = decide(result, deny_listed=not paid and token in self.deny_list,
                             duplicate=not paid and is_duplicate(
                                 last, now, self.config.policy.duplicate_window),
                             policy=self.config.policy)
        category = rider_category(self.config.rider_rules, result.holder_category,
                                  result.holder_birth_date, local.date())
        seq = self.journal.last_seq + 1
        record = self._record(seq, now, result, verdict, category, epurse,
                              _aip(gpo[-1]) if gpo else None)
        t1 = time.perf_counter()
        self.journal.append(seq, record.tap_id, now, token, verdict.outcome.value, encode(record))
        journal_s = time.perf_counter() - t1
        if verdict.outcome is TapOutcome.ACCEPTED:
            self.duplicates.remember(token, now)
        if self.on_journaled is not None:
            self.on_journaled(record)
        earlier = self._recovered_record(now, result, category) if epurse else None
        if earlier is not None:
            self.journal.append(earlier.seq, earlier.tap_id, now, token, earlier.outcome.value,
                                encode(earlier))
            if self.on_journaled is not None:
                self.on_journaled(earlier)
        display = display_for(verdict, category, self.config.rider_rules)
        return self._shown(TapEvent(verdict, display, result, record, kernel_s, journal_s))

    def _recovered_record(self, now: dt.datetime, result: TapResult,
                          category: str) -> TapRecord | None:
        """A torn purchase this tap proved completed (the card's proof, with its TAC) that was
        not this tap's own retry: the fare it took gets a record of its own, or no clearing
        would ever pay it.  One completed only by the card's log has no TAC to clear with: it
        is left to the clearing house, as the purchase flow's docstring says."""
        rec = result.epurse_recovered
        if not rec or rec.get("status") != "completed" or rec.get("tac") is None \
                or rec.get("card_serial") == result.epurse_serial or "when" not in rec:
            return None
        seq = self.journal.last_seq + 1
        amount = int(rec["amount"])
        earlier = replace(result, epurse_serial=int(rec["card_serial"]),
                          psam_serial=int(rec["psam_serial"]), epurse_tac=str(rec["tac"]),
                          epurse_balance_before=int(rec["balance_before"]),
                          epurse_balance_after=int(rec["balance_before"]) - amount,
                          epurse_when=str(rec["when"]),
                          epurse_key_version=int(rec["key_version"]),
                          epurse_algorithm_id=int(rec["algorithm_id"]))
        # Its own time: when the card took it (the digits its TAC covers, local wall clock).
        then = parse_datetime_bcd(bytes.fromhex(str(rec["when"])), "torn purchase time")
        record = self._record(seq, then.replace(tzinfo=self.config.timezone), earlier,
                              Verdict(TapOutcome.ACCEPTED, None), category, True, None)
        return msgspec.structs.replace(record, amount=amount,
                                       reason="torn purchase completed earlier")

    def _screen(self, token: str, now: dt.datetime) -> Verdict | None:
        """The local refusals that must come before an e-purse pays (same order as decide)."""
        if token in self.deny_list:
            return Verdict(TapOutcome.DENY_LISTED, "deny-listed")
        if is_duplicate(self.duplicates.last(token), now, self.config.policy.duplicate_window):
            return Verdict(TapOutcome.DUPLICATE, "duplicate-tap")
        return None

    def _shown(self, event: TapEvent) -> TapEvent:
        if self.show is not None:
            self.show(event.display)
        return event

    def _record(self, seq: int, now: dt.datetime, result: TapResult, verdict: Verdict,
                category: str, epurse: bool, aip: bytes | None) -> TapRecord:
        c = self.config
        assert result.pan_token and result.pan_masked and result.aid
        common: dict[str, Any] = {
            "tap_id": f"{c.validator_id}:{self.journal.epoch}:{seq}",
            "validator_id": c.validator_id, "operator_id": c.operator_id, "seq": seq,
            "time": now.astimezone(dt.UTC), "stop_id": c.stop_id, "route_id": c.route_id,
            "action": c.action, "outcome": verdict.outcome,
            "reason": None if verdict.reason is None else verdict.reason[:120],
            "pan_token": result.pan_token, "pan_masked": result.pan_masked, "aid": result.aid,
            "amount": c.amount, "currency": c.currency, "rider_category": category,
            "fare_media": c.fare_media.get(result.aid, "epurse" if epurse else "emv"),
            "deny_list_version": self.deny_list.version,
            "fare_table_version": self.fare_version(),
        }
        if epurse:
            return TapRecord(
                **common, method=Method.EPURSE,
                epurse_balance_before=result.epurse_balance_before,
                epurse_balance_after=result.epurse_balance_after,
                epurse_serial=result.epurse_serial,
                tac=bytes.fromhex(result.epurse_tac) if result.epurse_tac else None,
                psam_id=result.psam_id.upper() if result.psam_id else None,
                psam_serial=result.psam_serial, epurse_issuer=result.epurse_issuer,
                epurse_card=result.epurse_card_number,
                epurse_key_version=result.epurse_key_version,
                epurse_algorithm=result.epurse_algorithm_id, epurse_when=result.epurse_when)
        assert result.cryptogram is not None and result.atc is not None and aip is not None
        iad = bytes.fromhex(result.iad or "")
        terminal_data = b"".join(bytes.fromhex(result.ac_data[tlv.tag_hex(t)])
                                 for t in AC_TERMINAL_TAGS if tlv.tag_hex(t) in result.ac_data)
        try:
            parsed = IssuerApplicationData.parse(iad)
            scheme = SCHEMES.get(parsed.algorithm, "unknown")
            ac_data = ac_input(terminal_data, aip, result.atc, parsed.cvr)
        except AppDataError:
            scheme = "unknown"
            ac_data = ac_input(terminal_data, aip, result.atc, b"")
        return TapRecord(
            **common, method=Method.EMV, oda=result.oda, oda_ok=result.oda_ok, atc=result.atc,
            cryptogram=bytes.fromhex(result.cryptogram), cid=result.cid or 0, iad=iad, aip=aip,
            ac_data=ac_data, scheme=scheme)


def _aip(gpo_response: bytes) -> bytes:
    """The AIP (tag 82) from a GPO answer, format 1 or 2; 0000 if it cannot be found."""
    try:
        nodes = tlv.decode(gpo_response[:-2])
    except TlvError:
        return b"\x00\x00"
    if len(nodes) == 1 and nodes[0].tag == 0x80 and len(nodes[0].value) >= 2:
        return nodes[0].value[:2]
    aip = tlv.flatten(nodes).get(0x82)
    return aip if aip is not None and len(aip) == 2 else b"\x00\x00"
