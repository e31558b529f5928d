"""The issuer as one object: records in memory, decisions from the pure functions.

:class:`Issuer` hosts one or more banks (each with its :class:`~issuer.policy.BankPolicy`).
It is the imperative shell around :mod:`issuer.authorization` and :mod:`issuer.lifecycle`:
it looks records up, calls the pure decision, keeps the result and remembers it as a
change for the owner of the database (:meth:`drain_changes`).  Requests are idempotent
by their ids, because an acquirer that crashed will ask again.
"""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Iterable
from datetime import datetime, timezone

from emv.pan import mask_pan, pan_token
from issuer import authorization, lifecycle
from issuer.codes import ResponseCode
from issuer.errors import (
    AccountError,
    DuplicateError,
    HoldError,
    IllegalTransitionError,
    IssuerError,
    KeyStoreError,
    UnknownAccountError,
    UnknownCardError,
)
from issuer.journal import (
    MAX_AMOUNT,
    MAX_BALANCE,
    JournalEntry,
    account_ledger,
    cash_ledger,
    held_ledger,
    merchant_ledger,
)
from issuer.keys import KeyStore
from issuer.lifecycle import Event
from issuer.models import (
    Account,
    AccountStatus,
    AuthKind,
    AuthorizationRequest,
    AuthRecord,
    AuthResponse,
    Capture,
    Card,
    CardState,
    Hold,
    HoldStatus,
    Replacement,
    ReplaceReason,
    evolve,
)
from issuer.policy import BankPolicy
from issuer.retention import keeps_auth, keeps_capture, keeps_hold
from issuer.store import IssuerChanges, IssuerSnapshot

# The request kinds whose cryptogram the issuer checks itself (the others refer to a record).
_CHECKS_CRYPTOGRAM = (AuthKind.ACCOUNT_VERIFICATION, AuthKind.PURCHASE)
# Lifecycle events at the counter that count as account movement (dormancy counts from them).
_MOVEMENTS = (Event.ACTIVATE, Event.RESTORE)


def _aware(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise ValueError("issuer time must be timezone-aware")
    return now


def _in_zone_of(floor: datetime, record: AuthRecord | None) -> datetime:
    """``floor`` in the fixed-offset zone of ``record``'s time, when it has one (the same
    instant: comparisons with times of that zone need no offset lookups), else as it is."""
    tz = record.at.tzinfo if record is not None else None
    return floor.astimezone(tz) if type(tz) is timezone else floor


def check_amount(amount: int, what: str = "amount", *, zero: bool = False) -> int:
    """An amount a branch operation may move: a whole number of minor units, 1 (0 if
    ``zero``) to :data:`~issuer.journal.MAX_AMOUNT`; else an AccountError naming ``what``."""
    low = 0 if zero else 1
    if isinstance(amount, bool) or not isinstance(amount, int) or not low <= amount <= MAX_AMOUNT:
        raise AccountError(f"{what} must be a whole number of minor units from {low} to "
                           f"{MAX_AMOUNT:,}, got {amount!r}")
    return amount


class Issuer:
    """Accounts, cards, authorizations, holds and captures of the hosted banks."""

    def __init__(
        self,
        keys: KeyStore,
        policies: Iterable[BankPolicy],
        token_key: bytes,
        snapshot: IssuerSnapshot | None = None,
    ) -> None:
        self.keys = keys
        self.policies: dict[str, BankPolicy] = {p.bank_id: p for p in policies}
        self._token_key = token_key
        self.accounts: dict[str, Account] = {}
        self.cards: dict[str, Card] = {}
        self.auths: dict[str, AuthRecord] = {}
        self.holds: dict[str, Hold] = {}
        self.captures: dict[str, Capture] = {}
        self._changes = IssuerChanges()
        if snapshot is not None:
            self.accounts = {a.account_id: a for a in snapshot.accounts}
            self.cards = {c.pan_token: c for c in snapshot.cards}
            self.auths = {r.request_id: r for r in snapshot.auths}
            self.holds = {h.hold_id: h for h in snapshot.holds}
            self.captures = {c.capture_id: c for c in snapshot.captures}

    def __repr__(self) -> str:
        return f"Issuer(banks={sorted(self.policies)!r}, cards={len(self.cards)})"

    # -- change tracking ---------------------------------------------------------------

    def drain_changes(self) -> IssuerChanges:
        """Records changed since the last call, for the caller's transaction."""
        changes, self._changes = self._changes, IssuerChanges()
        return changes

    def discard_changes(self) -> None:
        """Forget pending changes (the caller reloads from storage after a failed commit)."""
        self._changes = IssuerChanges()

    def _put_account(self, account: Account) -> None:
        self.accounts[account.account_id] = account
        self._changes.accounts[account.account_id] = account

    def _put_card(self, card: Card) -> None:
        self.cards[card.pan_token] = card
        self._changes.cards[card.pan_token] = card

    def _put_auth(self, record: AuthRecord) -> None:
        self.auths[record.request_id] = record
        self._changes.auths[record.request_id] = record

    def _put_hold(self, hold: Hold) -> None:
        self.holds[hold.hold_id] = hold
        self._changes.holds[hold.hold_id] = hold

    def _journal(
        self, entry_id: str, now: datetime, debit: str, credit: str, amount: int, currency: str,
        ref: str,
    ) -> None:
        """Record one money movement for the caller's transaction (with the accounts it
        changed).  An id already pending here is refused: the same request twice."""
        if amount <= 0:
            return  # nothing moved
        journal = self._changes.journal
        if entry_id in journal:
            raise DuplicateError(f"journal entry {entry_id!r} is already recorded")
        journal[entry_id] = JournalEntry(entry_id, now, debit, credit, amount, currency, ref)

    def _hold_entry(self, hold: Hold, now: datetime) -> None:
        self._journal("hold:" + hold.hold_id, now, account_ledger(hold.account_id),
                      held_ledger(hold.account_id), hold.amount, hold.currency,
                      f"hold for {hold.merchant_id}")

    # -- lookups -----------------------------------------------------------------------

    def policy(self, bank_id: str) -> BankPolicy:
        try:
            return self.policies[bank_id]
        except KeyError:
            raise IssuerError(f"no bank {bank_id!r} at this issuer") from None

    def account(self, account_id: str) -> Account:
        try:
            return self.accounts[account_id]
        except KeyError:
            raise UnknownAccountError(f"no account {account_id!r}") from None

    def card(self, token: str) -> Card:
        try:
            return self.cards[token]
        except KeyError:
            raise UnknownCardError(f"no card with token {token[:8]}...") from None

    def token_of(self, pan: str) -> str:
        return pan_token(pan, self._token_key)

    def epurse_token(self, card_number: str) -> str:
        """Keyed token of an e-purse card number (application serial, up to 20 digits), kept
        apart from PAN tokens by its own label: the number itself is never stored."""
        digest = hmac.digest(self._token_key, b"epurse:" + card_number.encode("ascii"), "sha256")
        return digest[:16].hex()

    # -- accounts ----------------------------------------------------------------------

    def open_account(
        self, account_id: str, bank_id: str, currency: str, now: datetime, balance: int = 0
    ) -> Account:
        _aware(now)
        self.policy(bank_id)
        if account_id in self.accounts:
            raise DuplicateError(f"account {account_id!r} exists")
        if len(currency) != 3 or not currency.isalpha() or not currency.isupper():
            raise AccountError(f"currency must be an ISO 4217 code like 'CNY', got {currency!r}")
        check_amount(balance, "opening balance", zero=True)
        account = Account(account_id, bank_id, currency, balance, 0, AccountStatus.OPEN, now, now)
        self._journal("open:" + account_id, now, cash_ledger(bank_id), account_ledger(account_id),
                      balance, currency, "opening balance")
        self._put_account(account)
        return account

    def _open_account(self, account_id: str) -> Account:
        account = self.account(account_id)
        if account.status is AccountStatus.CLOSED:
            raise AccountError(f"account {account_id!r} is closed")
        return account

    @staticmethod
    def _credit_room(account: Account, amount: int) -> None:
        if account.balance + amount > MAX_BALANCE:
            raise AccountError(f"account {account.account_id!r} would hold more than "
                               f"{MAX_BALANCE:,} minor units, the most an account may hold")

    def deposit(
        self, account_id: str, amount: int, now: datetime, *, ref: str | None = None
    ) -> Account:
        """Counter business (a branch deposit): allowed whatever the card's state.  ``ref``
        (the branch's request id) names the journal row ``deposit:<ref>``: the same request
        again is refused by the journal instead of depositing twice."""
        _aware(now)
        account = self._open_account(account_id)
        check_amount(amount, "deposit amount")
        self._credit_room(account, amount)
        self._journal(f"deposit:{ref or uuid.uuid4().hex}", now, cash_ledger(account.bank_id),
                      account_ledger(account_id), amount, account.currency, "branch deposit")
        account = evolve(account, balance=account.balance + amount, last_movement=now)
        self._put_account(account)
        return account

    def withdraw(
        self, account_id: str, amount: int, now: datetime, *, ref: str | None = None
    ) -> Account:
        """Counter business (cash out at a branch): allowed whatever the card's state (a
        replaced or dormant card's account too), up to the available balance."""
        _aware(now)
        account = self._open_account(account_id)
        check_amount(amount, "withdrawal amount")
        if amount > account.available:
            raise AccountError(f"account {account_id!r} has {account.available} available "
                               f"(balance {account.balance}, held {account.held}): cannot "
                               f"withdraw {amount}")
        self._journal(f"withdraw:{ref or uuid.uuid4().hex}", now, account_ledger(account_id),
                      cash_ledger(account.bank_id), amount, account.currency, "branch withdrawal")
        account = evolve(account, balance=account.balance - amount, last_movement=now)
        self._put_account(account)
        self._close_if_emptied(account, now)
        return self.accounts[account_id]

    def transfer(
        self, from_account: str, to_account: str, amount: int, now: datetime, *,
        ref: str | None = None,
    ) -> tuple[Account, Account]:
        """Counter business: move money between two accounts this issuer holds (a replaced
        card's balance to the new card at another bank, say).  Both accounts move."""
        _aware(now)
        source = self._open_account(from_account)
        target = self._open_account(to_account)
        if source.account_id == target.account_id:
            raise AccountError("a transfer needs two different accounts")
        if source.currency != target.currency:
            raise AccountError(f"account {from_account!r} is in {source.currency}, "
                               f"{to_account!r} in {target.currency}")
        check_amount(amount, "transfer amount")
        if amount > source.available:
            raise AccountError(f"account {from_account!r} has {source.available} available "
                               f"(balance {source.balance}, held {source.held}): cannot "
                               f"transfer {amount}")
        self._credit_room(target, amount)
        self._journal(f"transfer:{ref or uuid.uuid4().hex}", now, account_ledger(from_account),
                      account_ledger(to_account), amount, source.currency,
                      f"branch transfer to {to_account}")
        self._put_account(evolve(source, balance=source.balance - amount, last_movement=now))
        self._put_account(evolve(target, balance=target.balance + amount, last_movement=now))
        self._close_if_emptied(self.accounts[from_account], now)
        return self.accounts[from_account], self.accounts[to_account]

    def _replaced_card_of(self, account_id: str) -> Card | None:
        for card in self.cards.values():
            if card.account_id == account_id and card.state is CardState.REPLACED:
                return card
        return None

    def _close_if_emptied(self, account: Account, now: datetime) -> None:
        """A replaced card's account that the holder emptied at the counter (withdrawal or
        transfer) has done its work: it closes, and the replacement counts as settled."""
        if account.balance or account.held:
            return
        card = self._replaced_card_of(account.account_id)
        if card is None or card.replacement is None:
            return
        self._put_account(evolve(account, status=AccountStatus.CLOSED))
        self._put_card(evolve(card, replacement=evolve(card.replacement, balance_moved=True)))

    # -- cards and their lifecycle -----------------------------------------------------

    def issue_card(
        self,
        pan: str,
        psn: str,
        account_id: str,
        *,
        scheme: str,
        imk_id: str,
        expires_at: datetime,
        now: datetime,
    ) -> Card:
        """A new card, financial function not yet activated.  The PAN is not kept."""
        _aware(now)
        _aware(expires_at)
        account = self.account(account_id)
        token = self.token_of(pan)
        if token in self.cards:
            raise DuplicateError(f"card {mask_pan(pan)} is already issued")
        card = Card(
            pan_token=token,
            masked_pan=mask_pan(pan),
            psn=psn,
            account_id=account_id,
            bank_id=account.bank_id,
            scheme=scheme,
            key=self.keys.provision(scheme, imk_id, pan, psn),
            expires_at=expires_at,
            state=CardState.NOT_ACTIVATED,
            state_changed_at=now,
        )
        self._put_card(card)
        return card

    def apply(self, token: str, event: Event, now: datetime) -> Card:
        """A lifecycle event on one card (REPLACE goes through :meth:`replace`)."""
        _aware(now)
        if event is Event.REPLACE:
            raise IssuerError("use Issuer.replace to replace a card")
        card = self.card(token)
        account = self.account(card.account_id)
        policy = self.policy(card.bank_id)
        if event is Event.GO_DORMANT:
            if not lifecycle.is_dormant_due(account, now, policy):
                raise IllegalTransitionError(
                    card.masked_pan, card.state.value, event.value, "account moved recently"
                )
        elif event is Event.RESTORE and card.state is CardState.ACTIVE and \
                lifecycle.effective_state(card, account, now, policy) is CardState.DORMANT:
            # The bank acts on the effective state: an account dormant by the clock is
            # restored as such, whether or not the nightly sweep marked it.
            card = lifecycle.transition(card, Event.GO_DORMANT, now)
        card = lifecycle.transition(card, event, now)
        if event is Event.CANCEL:
            self._close_account(card.account_id, now)  # raises before anything changes
        elif event in _MOVEMENTS:
            # Restore and activation are account movement at the counter: the dormancy
            # period counts from them, as from a deposit.
            self._put_account(evolve(account, last_movement=now))
        self._put_card(card)
        return card

    def sweep(self, now: datetime) -> list[Card]:
        """The nightly job: expiry and dormancy transitions that are due; the changed cards."""
        changed = []
        for card in list(self.cards.values()):
            new = lifecycle.sweep(
                card, self.account(card.account_id), now, self.policy(card.bank_id)
            )
            if new is not card:
                self._put_card(new)
                changed.append(new)
        return changed

    def replace(
        self,
        old_token: str,
        new_pan: str,
        new_psn: str,
        new_account_id: str,
        *,
        reason: ReplaceReason,
        imk_id: str,
        expires_at: datetime,
        now: datetime,
    ) -> Card:
        """Issue a new card for an old one; the old one is REPLACED, its money moves later."""
        _aware(now)
        old = self.card(old_token)
        new_account = self.account(new_account_id)
        if new_account.account_id == old.account_id:
            raise AccountError("the new card needs its own account (the balance moves to it)")
        old_account = self.account(old.account_id)
        if new_account.currency != old_account.currency:
            raise AccountError("old and new account currencies differ")
        new_token = self.token_of(new_pan)
        replacement = Replacement(
            new_token=new_token,
            same_bank=new_account.bank_id == old.bank_id,
            reason=reason,
            at=now,
        )
        replaced = lifecycle.transition(
            old, Event.REPLACE, now, replacement=replacement, policy=self.policy(old.bank_id)
        )
        new = self.issue_card(
            new_pan, new_psn, new_account_id,
            scheme=old.scheme, imk_id=imk_id, expires_at=expires_at, now=now,
        )  # fmt: skip
        self._put_card(replaced)
        return new

    def confirm_balance_transfer(self, old_token: str, now: datetime) -> Account:
        """Same bank: the holder confirmed; the old balance moves to the new card's account."""
        _aware(now)
        old = self.card(old_token)
        rep = old.replacement
        if old.state is not CardState.REPLACED or rep is None:
            raise IllegalTransitionError(
                old.masked_pan, old.state.value, "confirm_balance_transfer", "not replaced"
            )
        if not rep.same_bank:
            raise AccountError(
                "the new card is at another bank: the old account closes after grace"
            )
        if rep.balance_moved:
            return self.account(self.card(rep.new_token).account_id)  # already done: idempotent
        source = self.account(old.account_id)
        if source.held:
            raise AccountError("the old account still has holds; capture or release them first")
        target = self._open_account(self.card(rep.new_token).account_id)
        self._move_and_close(old, source, target, now)
        return self.accounts[target.account_id]

    def _move_and_close(self, old: Card, source: Account, target: Account, now: datetime) -> None:
        """The replacement's balance move (journal row ``replace:<old account>``), then the
        old account closes and the replacement counts as settled."""
        assert old.replacement is not None
        self._credit_room(target, source.balance)
        self._journal("replace:" + source.account_id, now, account_ledger(source.account_id),
                      account_ledger(target.account_id), source.balance, source.currency,
                      f"replacement balance to {target.account_id}")
        if source.balance:
            target = evolve(target, balance=target.balance + source.balance, last_movement=now)
            self._put_account(target)
        self._put_account(evolve(source, balance=0, status=AccountStatus.CLOSED, last_movement=now))
        self._put_card(evolve(old, replacement=evolve(old.replacement, balance_moved=True)))

    def close_after_grace(self, now: datetime) -> list[Account]:
        """Other bank: old accounts whose grace period is over close, after their balance
        moved to the new card's account (journal row ``replace:<old account>``; paid out at
        the counter if that account is closed too).  An account with holds waits for them.
        Returns the closed accounts as they were just before closing."""
        _aware(now)
        closed = []
        for card in list(self.cards.values()):
            rep = card.replacement
            if card.state is not CardState.REPLACED or rep is None or rep.same_bank:
                continue
            account = self.account(card.account_id)
            grace = self.policy(card.bank_id).replacement_grace
            if account.status is AccountStatus.OPEN and not account.held and now >= rep.at + grace:
                closed.append(account)
                new_card = self.cards.get(rep.new_token)
                target = self.accounts.get(new_card.account_id) if new_card else None
                if target is not None and target.status is AccountStatus.OPEN \
                        and target.currency == account.currency:
                    self._move_and_close(card, account, target, now)
                else:
                    self._close_account(account.account_id, now)
                    self._put_card(evolve(card, replacement=evolve(rep, balance_moved=True)))
        return closed

    def _close_account(self, account_id: str, now: datetime) -> None:
        """Close an account; what is left on it is paid out at the counter (row
        ``payout:<account>``)."""
        account = self.account(account_id)
        if account.held:
            raise AccountError(f"account {account_id!r} has holds of {account.held}; settle first")
        self._journal("payout:" + account_id, now, account_ledger(account_id),
                      cash_ledger(account.bank_id), account.balance, account.currency,
                      "balance paid out at closing")
        self._put_account(
            evolve(account, balance=0, status=AccountStatus.CLOSED, last_movement=now)
        )

    # -- authorization, capture, release -----------------------------------------------

    def authorize(self, request: AuthorizationRequest, now: datetime) -> AuthResponse:
        """Answer a request (the same answer again for a request id already seen)."""
        _aware(now)
        known = self.auths.get(request.request_id)
        if known is not None:
            return AuthResponse(known.request_id, known.code, known.flags, known.hold_id)
        card = self.cards.get(request.pan_token)
        if card is None:
            record = AuthRecord(
                request.request_id, request.pan_token, request.kind, request.amount,
                request.currency, request.merchant_id, ResponseCode.INVALID_CARD,
                frozenset(), now, request.atc, request.arqc, False,
                request.original_request_id, None,
            )  # fmt: skip
            self._put_auth(record)
            return AuthResponse(record.request_id, record.code, record.flags, None)
        card_key: bytes | None = None
        if request.kind in _CHECKS_CRYPTOGRAM:  # only these use the key
            try:
                card_key = self.keys.card_key(card.key)
            except KeyStoreError:
                card_key = None  # the decision answers a system malfunction
        original = (
            self.auths.get(request.original_request_id) if request.original_request_id else None
        )
        account = self.account(card.account_id)
        decision = authorization.authorize(
            account,
            card,
            request,
            now,
            card_key=card_key,
            policy=self.policy(card.bank_id),
            original=original,
        )
        # What _put_auth/_put_card/... do, without a call each (this runs for every request).
        changes = self._changes
        record = decision.record
        self.auths[record.request_id] = changes.auths[record.request_id] = record
        if decision.card is not card:
            self.cards[card.pan_token] = changes.cards[card.pan_token] = decision.card
        if decision.account is not account:
            self.accounts[account.account_id] = changes.accounts[account.account_id] = (
                decision.account
            )
        hold = decision.hold
        if hold is not None:
            self.holds[hold.hold_id] = changes.holds[hold.hold_id] = hold
            self._hold_entry(hold, now)
        if decision.original is not None:
            self._put_auth(decision.original)
        return AuthResponse(
            request.request_id, decision.code, record.flags,
            hold.hold_id if hold is not None else None, decision.arpc,
        )  # fmt: skip

    def reserve(
        self, token: str, amount: int, currency: str, hold_id: str, merchant_id: str,
        now: datetime,
    ) -> tuple[ResponseCode, Hold | None]:
        """Hold money for a transfer the bank starts itself (an e-purse load); idempotent by
        ``hold_id``: a hold already placed is answered again, approved."""
        _aware(now)
        known = self.holds.get(hold_id)
        if known is not None:
            return ResponseCode.APPROVED, known
        card = self.cards.get(token)
        if card is None:
            return ResponseCode.INVALID_CARD, None
        account = self.account(card.account_id)
        code, account, hold = authorization.reserve(
            account, card, amount, currency, hold_id, merchant_id, now,
            self.policy(card.bank_id),
        )  # fmt: skip
        if hold is not None:
            self._put_account(account)
            self._put_hold(hold)
            self._hold_entry(hold, now)
        return code, hold

    def capture(
        self, hold_id: str, amount: int, capture_id: str, now: datetime, *,
        entry_id: str | None = None,
    ) -> Capture:
        """Take money under a hold; the same ``capture_id`` again returns the first capture.

        Journal: ``capture:<capture_id>`` (or ``entry_id``) moves the amount from the held
        money to the merchant; the rest of the hold goes back as ``release:<hold_id>``."""
        _aware(now)
        done = self.captures.get(capture_id)
        if done is not None:
            if done.hold_id != hold_id or done.amount != amount:
                raise HoldError(f"capture {capture_id} was already made with other terms")
            return done
        hold = self.holds.get(hold_id)
        if hold is None:
            raise HoldError(f"no hold {hold_id}")
        account, settled, cap = authorization.capture(
            self.account(hold.account_id), hold, amount, capture_id, now
        )
        held = held_ledger(hold.account_id)
        self._journal(entry_id or "capture:" + capture_id, now, held,
                      merchant_ledger(hold.merchant_id), amount, hold.currency,
                      f"capture of hold {hold_id}")
        self._journal("release:" + hold_id, now, held, account_ledger(hold.account_id),
                      hold.amount - amount, hold.currency, f"rest of hold {hold_id}")
        hold = settled
        self._put_account(account)
        self._put_hold(hold)
        self.captures[capture_id] = cap
        self._changes.captures[capture_id] = cap
        return cap

    def release(self, hold_id: str, now: datetime) -> Hold:
        """Give back a hold (a no-op answer for one already released)."""
        _aware(now)
        hold = self.holds.get(hold_id)
        if hold is None:
            raise HoldError(f"no hold {hold_id}")
        if hold.status is HoldStatus.RELEASED:
            return hold
        account, released = authorization.release(self.account(hold.account_id), hold, now)
        self._journal("release:" + hold_id, now, held_ledger(hold.account_id),
                      account_ledger(hold.account_id), hold.amount, hold.currency,
                      f"release of hold {hold_id}")
        hold = released
        self._put_account(account)
        self._put_hold(hold)
        return hold

    def captured_total(self, merchant_id: str | None = None) -> int:
        """Sum of captures (for one merchant) — one side of the reconciliation."""
        return sum(
            c.amount
            for c in self.captures.values()
            if merchant_id is None or c.merchant_id == merchant_id
        )

    # -- retention (issuer/retention.py) ------------------------------------------------

    def prune(self, floor: datetime) -> int:
        """Forget, in memory only, the records a load for ``floor`` would not read (their
        rows stay in the database): what keeps a long-running holder's memory bounded by
        cards and a window instead of history.  Pending changes are untouched.  Returns how
        many records were dropped; one pass over the records, so call it rarely (the core
        does when its late-arrival floor moves: once a day)."""
        _aware(floor)
        before = len(self.auths) + len(self.holds) + len(self.captures)
        # Most records are kept (newer than the floor): that test comes first, against the
        # floor in the zone the records' times carry.  An aware time compared with one of
        # another zone asks both for their offsets; with the same fixed-offset zone the
        # fields alone decide (exact), a tenth of the cost, and a prune walks every record.
        # keeps_* decide the rest (older records, and any of another zone).
        at = _in_zone_of(floor, next(iter(self.auths.values()), None))
        self.auths = {k: r for k, r in self.auths.items()
                      if r.at >= at or keeps_auth(r, floor)}  # fmt: skip
        self.holds = {k: h for k, h in self.holds.items()
                      if h.created_at >= at or keeps_hold(h, floor)}  # fmt: skip
        self.captures = {k: c for k, c in self.captures.items()
                         if c.at >= at or keeps_capture(c, floor)}  # fmt: skip
        return before - len(self.auths) - len(self.holds) - len(self.captures)

    def readmit(self, records: IssuerSnapshot) -> None:
        """Put records read back from the database (a late message naming a pruned one)
        into memory again, where none of the same id is: they are durable already, so they
        are no change; the next prune drops them again."""
        for r in records.auths:
            self.auths.setdefault(r.request_id, r)
        for h in records.holds:
            self.holds.setdefault(h.hold_id, h)
        for c in records.captures:
            self.captures.setdefault(c.capture_id, c)
