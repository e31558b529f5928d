"""Recharge at the bank: the holder's account pays the chip's T-Union e-purse, host side.

The load is the real PBOC ED/EP transaction (JR/T 0025.2 §5.2, taken over by JT/T 978;
``emv.epurse.load`` has the APDU layouts), driven here by the bank that owns the account and
the issuer's e-purse float::

    host = LoadHost(issuer, store, keys=..., terminal_id=..., clock=...)
    outcome = host.load(card.process, token=token, amount=5000, load_id="branch-7:0042")

The host works as payment hosts do, with a pending load between the hold and the capture:

1. resolve first: every load of this card still ``pending`` from an earlier run is settled
   by asking the card (GET TRANSACTION PROOF for its online serial, else its current online
   serial and its transaction log): credited -> captured, not credited -> released;
2. INITIALIZE FOR LOAD; the card's MAC1 is checked under the issuer's load key (a forged or
   altered answer moves nothing);
3. authorize and reserve: the account's state and funds (issuer/README.md codes), a hold,
   and a ``pending`` load keyed by (card, online serial) written in ONE transaction, BEFORE
   MAC2 leaves the host;
4. CREDIT FOR LOAD with MAC2; the card answers with its TAC, which the host verifies with
   the issuer's TAC key, then captures: the hold is taken from the account and a journal
   row debits the account and credits the float, with the load ``captured`` in the same
   transaction.  A definite refusal by the card releases the hold; a lost answer or a store
   that cannot be reached leaves the load ``pending`` for step 1 of the next run.

The account is therefore never debited unless the chip was credited, and the chip is never
credited without a hold and a durable pending load behind it.  A ``load_id`` seen before is
answered from its record (resolved first if pending): one request, one load.  No clear card
number or key is kept: cards are named by PAN token, the e-purse card number by its token.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from emv import tlv
from emv.apdu import ResponseApdu, read_record, select
from emv.epurse.issuers import issuer_id_of
from emv.epurse.keys import Algorithm
from emv.epurse.load import T_UNION_EPURSE, LoadError, load_tac, open_session
from emv.epurse.messages import (
    GET_BALANCE,
    LOG_RECORDS,
    LOG_SFI,
    P2_EPURSE,
    PUBLIC_DATA_TAG,
    TYPE_LOAD,
    EpurseDataError,
    LoadInit,
    PublicData,
    TransactionRecord,
    credit_for_load,
    datetime_bcd,
    get_transaction_proof,
    initialize_for_load,
)
from emv.tlv import TlvError
from issuer.codes import DESCRIPTIONS, ResponseCode
from issuer.errors import IssuerError
from issuer.journal import (
    FLOAT_PREFIX,
    JournalEntry,
    account_ledger,
    ledger_balances,
)
from issuer.service import Issuer
from issuer.store import IssuerChanges

MAX_LOAD = 0xFFFFFFFF  # the 4-byte amount of INITIALIZE FOR LOAD
LOAD_ENTRY_PREFIX = "load:"
_SW_OK = 0x9000
_SW_PROOF_UNAVAILABLE = 0x9406


class LoadState(StrEnum):
    """Where a load stands (the state table is in issuer/README.md)."""

    PENDING = "pending"  # hold placed, MAC2 may have reached the card: outcome unknown
    CAPTURED = "captured"  # chip credited (TAC or card's log), account debited, float credited
    RELEASED = "released"  # the chip was not credited: the hold went back to the account
    REFUSED = "refused"  # refused before any hold (issuer code, MAC1, purse limit)


FINAL = frozenset((LoadState.CAPTURED, LoadState.RELEASED, LoadState.REFUSED))


class LoadStoreError(IssuerError):
    """The bank's database could not be read or written (names no credential)."""


class LoadCardError(IssuerError):
    """The card left the field before the load was under way: nothing moved."""


@dataclass(frozen=True, slots=True)
class LoadRecord:
    """One load request as the bank keeps it (no clear card number)."""

    load_id: str
    pan_token: str
    purse_token: str  # token of the e-purse card number (application serial)
    epurse_issuer: str
    account_id: str
    amount: int
    currency: str
    terminal_id: str  # hex, 6 bytes
    online_serial: int | None  # the card's load serial this load used
    balance_before: int | None  # the chip's balance INITIALIZE reported
    algorithm: str  # the card's e-purse algorithm (tdes, sm4; '' before INITIALIZE)
    credit_time: str  # hex BCD date-time sent in CREDIT FOR LOAD ('' before)
    state: LoadState
    reason: str  # '00' or an issuer code, or a short reason (card-mac1-invalid, ...)
    created_at: datetime
    resolved_at: datetime | None = None
    tac: str | None = None  # hex, once the card gave it
    mac2: str = ""  # hex, the host's MAC2 for this load (a session MAC, no key): the card's
    # proof repeats it, so it names this load even when the TAC cannot be checked

    @property
    def hold_id(self) -> str:
        return f"load:{self.load_id}"


def float_account(epurse_issuer: str) -> str:
    """The ledger account holding an e-purse issuer's float at the bank."""
    return FLOAT_PREFIX + epurse_issuer


def epurse_issuer_id(public: PublicData) -> str:
    """An e-purse issuer's name: the card's city code as 4 hex digits, the issuer id clearing
    and the PSAMs file its keys under (emv.epurse.issuers), so loads and clearing reconcile
    per issuer by the same name."""
    return issuer_id_of(public.city_code)


def loaded_by_issuer(entries: Iterable[JournalEntry]) -> dict[str, int]:
    """Per e-purse issuer, the total of captured loads (the rows ``load:<id>`` into its
    float): what chips of its cards were credited at this bank."""
    totals: dict[str, int] = {}
    for e in entries:
        if e.entry_id.startswith(LOAD_ENTRY_PREFIX) and e.credit.startswith(FLOAT_PREFIX):
            key = e.credit[len(FLOAT_PREFIX):]
            totals[key] = totals.get(key, 0) + e.amount
    return totals


class LoadStore(Protocol):
    """Where the bank keeps loads and journal rows, with the issuer's records."""

    def load_record(self, load_id: str) -> LoadRecord | None: ...

    def pending_loads(self, pan_token: str) -> list[LoadRecord]: ...

    def save_load(
        self, issuer: IssuerChanges, loads: list[LoadRecord], entries: list[JournalEntry]
    ) -> None:
        """Write all of it in one transaction, or raise LoadStoreError and write nothing."""
        ...

    def issuer_held(self) -> AbstractContextManager[object]:
        """A transaction holding the lock every writer of the issuer's records takes, from
        the first read inside to its end (``save_load`` inside is part of it)."""
        ...


@dataclass(frozen=True)
class LoadKeys:
    """The e-purse issuer's master keys the bank's host holds (load, and TAC to verify)."""

    load_master_key: bytes = field(repr=False)
    tac_master_key: bytes = field(repr=False)


@dataclass(frozen=True)
class LoadOutcome:
    """What one request came to; ``resolved`` are earlier pending loads settled first."""

    record: LoadRecord
    message: str
    repeated: bool = False  # the load_id was known: this is its recorded outcome
    balance_after: int | None = None  # the chip's balance, when the host knows it
    resolved: tuple[LoadOutcome, ...] = ()

    @property
    def state(self) -> LoadState:
        return self.record.state


class _CardLostError(Exception):
    """The transport failed: the card left the field, or its answer never came."""


@dataclass(frozen=True)
class _Purse:
    public: PublicData
    card_number: str = field(repr=False)


class LoadHost:
    """The bank's load host for one branch terminal; see the module docstring."""

    def __init__(
        self,
        issuer: Issuer,
        store: LoadStore,
        *,
        keys: LoadKeys,
        terminal_id: bytes,
        clock: Callable[[], datetime],
        max_balance: int | None = None,
        reload: Callable[[], Issuer] | None = None,
    ) -> None:
        if len(terminal_id) != 6:
            raise IssuerError("a load terminal number is 6 bytes")
        self.issuer = issuer
        self.store = store
        self.keys = keys
        self.terminal_id = terminal_id
        self.clock = clock
        self.max_balance = max_balance  # the purse's cap when known (else the card's 6985)
        self.stale = False  # a write failed: memory is ahead of the database
        # The issuer as the database holds it now: read again, under the issuer lock, before
        # each change this host writes (see _fresh).  None: the issuer given is the only
        # writer (a test's, or a simulation's).
        self.reload = reload

    @contextmanager
    def _fresh(self) -> Iterator[None]:
        """Each change of the issuer's records (the hold, the capture, the release) is made on
        the records as the database holds them now, with the issuer lock held until they are
        saved: a running back office charging the same account between the load's steps
        (they are seconds apart, the card in the field) is neither overwritten by this host's
        older copy nor able to write in between (issue 15: no branch work lost)."""
        if self.reload is None:
            yield
            return
        with self.store.issuer_held():
            self.issuer = self.reload()
            yield

    # -- the transport ------------------------------------------------------------------

    @staticmethod
    def _send(transceive: Callable[[bytes], bytes], command: bytes) -> ResponseApdu:
        try:
            raw = transceive(command)
        except Exception as exc:  # any transport failure is "card gone": the reader's own errors
            raise _CardLostError(type(exc).__name__) from None
        try:
            return ResponseApdu.parse(raw)
        except ValueError:
            raise _CardLostError("malformed answer") from None

    def _purse(self, transceive: Callable[[bytes], bytes]) -> _Purse | str:
        """SELECT the e-purse: its public data, or a refusal reason."""
        answer = self._send(transceive, select(T_UNION_EPURSE).to_bytes())
        if answer.sw != _SW_OK:
            return "no-epurse"
        try:
            node = tlv.find(tlv.decode(answer.data), PUBLIC_DATA_TAG)
            if node is None:
                return "no-epurse"
            public = PublicData.parse(node.value)
        except (TlvError, EpurseDataError):
            return "malformed-response"
        return _Purse(public, public.card_number)

    def _tac_ok(self, record: LoadRecord, card_number: str, algorithm: Algorithm,
                tac: bytes) -> bool:
        assert record.online_serial is not None and record.balance_before is not None
        expected = load_tac(self.keys.tac_master_key, card_number, algorithm,
                            balance_before=record.balance_before,
                            online_serial=record.online_serial, amount=record.amount,
                            terminal_id=bytes.fromhex(record.terminal_id),
                            when=bytes.fromhex(record.credit_time))
        return hmac.compare_digest(expected, tac)

    # -- records ------------------------------------------------------------------------

    def _save(self, loads: list[LoadRecord], entries: list[JournalEntry] | None = None) -> None:
        if self.stale:
            raise LoadStoreError("an earlier write failed: start a new host from the database")
        try:
            self.store.save_load(self.issuer.drain_changes(), loads, entries or [])
        except LoadStoreError:
            # Memory is ahead of the database now: this host stops; the next starts from it.
            self.issuer.discard_changes()
            self.stale = True
            raise

    def _capture(self, record: LoadRecord, tac: str | None, reason: str) -> LoadRecord:
        now = self.clock()
        with self._fresh():
            # The capture writes the journal row load:<id>: held money -> the issuer's float.
            self.issuer.capture(record.hold_id, record.amount, f"cap:{record.hold_id}", now,
                                entry_id=LOAD_ENTRY_PREFIX + record.load_id)
            done = replace(record, state=LoadState.CAPTURED, reason=reason, resolved_at=now,
                           tac=tac)  # fmt: skip
            self._save([done])
        return done

    def _release(self, record: LoadRecord, reason: str) -> LoadRecord:
        now = self.clock()
        with self._fresh():
            self.issuer.release(record.hold_id, now)
            done = replace(record, state=LoadState.RELEASED, reason=reason, resolved_at=now)
            self._save([done])
        return done

    # -- resolving a pending load -------------------------------------------------------

    def _credited(self, transceive: Callable[[bytes], bytes], record: LoadRecord,
                  purse: _Purse, algorithm: Algorithm) -> tuple[bool | None, str | None, str]:
        """Did the card take this load?  (credited?, TAC hex, evidence); None: cannot tell."""
        serial = record.online_serial
        assert serial is not None
        if not record.credit_time:  # MAC2 never left the host
            return False, None, "mac2-not-sent"
        proof = self._send(transceive, get_transaction_proof(TYPE_LOAD, serial))
        if proof.sw == _SW_OK and len(proof.data) == 8:
            tac, mac2 = proof.data[:4], proof.data[4:]
            if self._tac_ok(record, purse.card_number, algorithm, tac):
                return True, tac.hex().upper(), "proof-tac-verified"
            if hmac.compare_digest(mac2.hex().upper(), record.mac2.upper()):
                return None, None, "credited-tac-not-verified"  # ours, but the TAC is wrong
            return False, None, "serial-used-by-another-load"
        if proof.sw != _SW_PROOF_UNAVAILABLE:
            return None, None, f"proof-status-{proof.sw:04X}"
        init = self._send(transceive, initialize_for_load(1, 1, self.terminal_id))
        if init.sw != _SW_OK:
            return None, None, f"initialize-status-{init.sw:04X}"
        try:
            current = LoadInit.parse(init.data).serial
        except EpurseDataError:
            return None, None, "malformed-response"
        if current == serial:
            return False, None, "serial-not-moved"
        for n in range(1, LOG_RECORDS + 1):
            rec = self._send(transceive, read_record(LOG_SFI, n).to_bytes())
            if rec.sw != _SW_OK:
                break
            try:
                entry = TransactionRecord.parse(rec.data)
            except EpurseDataError:
                continue
            if entry.transaction_type == TYPE_LOAD and entry.serial == serial:
                ours = (entry.amount == record.amount
                        and entry.terminal_id.hex().upper() == record.terminal_id.upper()
                        and entry.when.hex() == record.credit_time.lower())  # fmt: skip
                return (True, None, "card-log") if ours else (False, None, "serial-used-elsewhere")
        return None, None, "serial-moved-no-trace"

    def _resolve_one(self, transceive: Callable[[bytes], bytes], record: LoadRecord,
                     purse: _Purse) -> LoadOutcome:
        algorithm = algorithm_from_name(record.algorithm)
        if algorithm is None:
            return LoadOutcome(record, "pending: the card's algorithm is unknown")
        credited, tac, evidence = self._credited(transceive, record, purse, algorithm)
        if credited is None:
            return LoadOutcome(record, f"still pending ({evidence}): needs the bank's review")
        if credited:
            done = self._capture(record, tac, evidence)
            return LoadOutcome(done, f"captured: the card had been credited ({evidence})")
        done = self._release(record, evidence)
        return LoadOutcome(done, f"released: the card was not credited ({evidence})")

    def resolve(self, transceive: Callable[[bytes], bytes], token: str) -> list[LoadOutcome]:
        """Settle this card's pending loads by asking the card (it must be in the field)."""
        pending = self.store.pending_loads(token)
        if not pending:
            return []
        purse = self._purse(transceive)
        if isinstance(purse, str):
            return [LoadOutcome(r, f"still pending: {purse}") for r in pending]
        purse_token = self.issuer.epurse_token(purse.card_number)
        out = []
        for record in sorted(pending, key=lambda r: (r.online_serial or 0, r.created_at)):
            if record.purse_token != purse_token:
                out.append(LoadOutcome(record, "still pending: another e-purse is in the field"))
                continue
            out.append(self._resolve_one(transceive, record, purse))
        return out

    # -- a load -------------------------------------------------------------------------

    def load(self, transceive: Callable[[bytes], bytes], *, token: str, amount: int,
             load_id: str) -> LoadOutcome:
        """One load request, resolving this card's earlier pending loads first.

        Raises LoadStoreError when the bank's database fails before MAC2 was sent (nothing
        moved); a failure after it leaves the load pending and is reported in the outcome.
        """
        try:
            return self._load(transceive, token, amount, load_id)
        except _CardLostError as exc:
            known = self.store.load_record(load_id)
            if known is not None and known.state is LoadState.PENDING:
                return LoadOutcome(known, f"pending: the card's answer was lost ({exc}); "
                                          "present the card again to settle it")
            raise LoadCardError(f"the card left the field before the load ({exc}); "
                                "nothing moved") from None

    def _refuse(self, base: LoadRecord, reason: str, message: str,
                resolved: tuple[LoadOutcome, ...] = ()) -> LoadOutcome:
        record = replace(base, state=LoadState.REFUSED, reason=reason,
                         resolved_at=self.clock())
        self._save([record])
        return LoadOutcome(record, f"refused: {message}", resolved=resolved)

    def _load(self, transceive: Callable[[bytes], bytes], token: str, amount: int,
              load_id: str) -> LoadOutcome:
        resolved = tuple(self.resolve(transceive, token))
        known = self.store.load_record(load_id)
        if known is not None:
            if known.pan_token != token or known.amount != amount:
                raise IssuerError(f"load request {load_id!r} was made for another card or "
                                  "amount")
            return LoadOutcome(known, f"already {known.state.value} ({known.reason}): this "
                                      "request was made before, nothing is loaded again",
                               repeated=True, resolved=resolved)
        now = self.clock()
        card = self.issuer.cards.get(token)
        if card is None:
            raise IssuerError("no such card at this bank (14)")
        account = self.issuer.account(card.account_id)
        base = LoadRecord(load_id, token, "", "", card.account_id, amount, account.currency,
                          self.terminal_id.hex().upper(), None, None, "", "", LoadState.PENDING,
                          "", now)  # fmt: skip
        if not 0 < amount <= MAX_LOAD:
            return self._refuse(base, ResponseCode.INVALID_AMOUNT.value,
                                f"a load is 1 to {MAX_LOAD} minor units", resolved)
        purse = self._purse(transceive)
        if isinstance(purse, str):
            return self._refuse(base, purse, "the card has no T-Union e-purse"
                                if purse == "no-epurse" else purse, resolved)
        base = replace(base, purse_token=self.issuer.epurse_token(purse.card_number),
                       epurse_issuer=epurse_issuer_id(purse.public))
        if self.max_balance is not None:
            bal = self._send(transceive, bytes((0x80, GET_BALANCE, 0x00, P2_EPURSE, 0x04)))
            if bal.sw == _SW_OK and len(bal.data) == 4:
                balance = int.from_bytes(bal.data, "big")
                if balance + amount > self.max_balance:
                    return self._refuse(
                        base, "purse-limit",
                        f"the e-purse holds {balance}, at most {self.max_balance} allowed: at "
                        f"most {max(self.max_balance - balance, 0)} can be loaded", resolved)
        # The issuer's answer before the card is asked to INITIALIZE (the hold follows MAC1).
        code = _precheck(self.issuer, token, amount, account.currency, now)
        if code is not ResponseCode.APPROVED:
            return self._refuse(base, code.value, f"{code.value} {DESCRIPTIONS[code]}", resolved)
        # Step 3: INITIALIZE FOR LOAD and the card's MAC1.
        answer = self._send(transceive, initialize_for_load(1, amount, self.terminal_id))
        if answer.sw == 0x6985:  # PBOC ED/EP: conditions not satisfied (cap, serial at FFFF)
            return self._refuse(base, "purse-limit", "the card refused INITIALIZE FOR LOAD "
                                "(6985: above its maximum balance, or its load serial is "
                                "exhausted)", resolved)
        if answer.sw != _SW_OK:
            return self._refuse(base, f"card-status-{answer.sw:04X}",
                                f"the card answered {answer.sw:04X}", resolved)
        try:
            init = LoadInit.parse(answer.data)
            session = open_session(self.keys.load_master_key, purse.card_number, init, amount,
                                   self.terminal_id)
        except EpurseDataError:
            return self._refuse(base, "malformed-response", "malformed card answer", resolved)
        except LoadError:
            return self._refuse(base, "unknown-algorithm", "unknown card algorithm", resolved)
        base = replace(base, online_serial=init.serial, balance_before=init.balance,
                       algorithm="" if session is None else session.algorithm)
        if session is None:
            return self._refuse(base, "card-mac1-invalid",
                                "the card's MAC1 does not verify under the issuer's load key "
                                "(not a genuine card, or altered data); nothing moved", resolved)
        algorithm = session.algorithm
        # Step 4: authorize + hold + pending load, durably, before MAC2 leaves the host.
        when = datetime_bcd(now)
        mac2 = session.mac2(when)
        pending = replace(base, credit_time=when.hex().upper(), mac2=mac2.hex().upper(),
                          reason="00")
        with self._fresh():
            code, hold = self.issuer.reserve(token, amount, account.currency, base.hold_id,
                                             float_account(base.epurse_issuer), now)
            if hold is not None:
                self._save([pending])
        if hold is None:
            return self._refuse(base, code.value, f"{code.value} {DESCRIPTIONS[code]}", resolved)
        # Step 5: CREDIT FOR LOAD; from here on the outcome lives in the pending record.
        answer = self._send(transceive, credit_for_load(when, mac2))
        if answer.sw == _SW_OK and len(answer.data) != 4:  # took it, but the TAC is garbled
            return LoadOutcome(pending, "pending: the card's answer to CREDIT FOR LOAD is "
                                        "malformed; present the card again to settle it",
                               resolved=resolved)
        if answer.sw != _SW_OK:  # a definite refusal: the card did not credit
            done = self._release(pending, f"card-status-{answer.sw:04X}")
            return LoadOutcome(done, f"released: the card refused CREDIT FOR LOAD "
                                     f"({answer.sw:04X}); the hold was given back",
                               resolved=resolved)
        if not self._tac_ok(pending, purse.card_number, algorithm, answer.data):
            held = replace(pending, reason="credited-tac-not-verified",
                           tac=answer.data.hex().upper())
            self._save([held])
            return LoadOutcome(held, "pending: the card took the load but its TAC does not "
                                     "verify; the bank must review it", resolved=resolved)
        try:
            done = self._capture(pending, answer.data.hex().upper(), "tac-verified")
        except LoadStoreError as exc:
            return LoadOutcome(pending, f"pending: the card was credited but the bank could not "
                                        f"record the capture ({exc}); it is captured when the "
                                        "card is presented again",
                               balance_after=init.balance + amount, resolved=resolved)
        return LoadOutcome(done, "loaded: the chip was credited (TAC verified) and the "
                                 "account debited", balance_after=init.balance + amount,
                           resolved=resolved)


def algorithm_from_name(name: str) -> Algorithm | None:
    """A stored algorithm name back as the type, or None for one this code does not know."""
    return "tdes" if name == "tdes" else "sm4" if name == "sm4" else None


def _precheck(issuer: Issuer, token: str, amount: int, currency: str,
              now: datetime) -> ResponseCode:
    """The issuer's answer to a hold of ``amount`` now, without placing it."""
    from issuer.authorization import reserve  # noqa: PLC0415

    card = issuer.card(token)
    code, _, _ = reserve(issuer.account(card.account_id), card, amount, currency, "precheck",
                         "precheck", now, issuer.policy(card.bank_id))
    return code


__all__ = [
    "FINAL", "JournalEntry", "LoadCardError", "LoadHost", "LoadKeys", "LoadOutcome",
    "LoadRecord", "LoadState", "LoadStore", "LoadStoreError", "account_ledger",
    "algorithm_from_name",
    "epurse_issuer_id", "float_account", "ledger_balances", "loaded_by_issuer",
]
