"""What a holder does at the bank branch, by name: issue a card, deposit, move it through its
lifecycle, replace it.  Shared by ``tapsim card issue`` / ``tapsim account`` and the replay's
cards file, so both speak the same words and reach the issuer the same way.

Also the banks a database knows: a few built-in policies, and the ones a cards file adds,
kept in the database (``meta`` row ``issuer.banks``) so later commands find them again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from emv.card.profile import CardProfile
from issuer.errors import IssuerError
from issuer.keys import KeyStore
from issuer.lifecycle import Event
from issuer.models import Account, AccountStatus, Card, ReplaceReason
from issuer.policy import BankPolicy, ExpiryPolicy
from issuer.service import Issuer

# TEST key-encryption key: wraps card keys in a simulator's database.  Never for real keys;
# a deployment sets TAPSIM_KEK (see backoffice/README.md, "Keys").
TEST_KEK = bytes.fromhex("74617073696D2D544553542D4B454B21")  # "tapsim-TEST-KEK!"

# Where a card's expiry date ends when the bank records it (the cards are Chinese).
CARD_TZ = ZoneInfo("Asia/Shanghai")

DEFAULT_BANK = "ICBC"
BUILTIN_BANKS: tuple[BankPolicy, ...] = (
    BankPolicy("ICBC", expiry=ExpiryPolicy.STOP, dormancy_after=timedelta(days=365)),
    BankPolicy("BOC", expiry=ExpiryPolicy.KEEP, dormancy_after=timedelta(days=3 * 365)),
    BankPolicy(
        "CCB", expiry=ExpiryPolicy.STOP, dormancy_after=timedelta(days=2 * 365),
        replacement_grace=timedelta(days=60),
    ),
)
BANKS_META_KEY = "issuer.banks"

# Lifecycle actions by the names the command line and the cards file use.
EVENTS: dict[str, Event] = {
    "activate": Event.ACTIVATE,
    "lost": Event.REPORT_LOST,
    "unfreeze": Event.UNFREEZE,
    "seal": Event.SEAL,
    "dormant": Event.GO_DORMANT,
    "restore": Event.RESTORE,
    "expire": Event.EXPIRE,
    "cancel": Event.CANCEL,
}
ACTIONS = ("deposit", "withdraw", *EVENTS, "confirm-transfer")
MONEY_ACTIONS = ("deposit", "withdraw")


class BranchError(ValueError):
    """A branch operation that cannot be done; the message says what and why."""


# -- banks --------------------------------------------------------------------------------


def bank_to_dict(p: BankPolicy) -> dict[str, object]:
    return {
        "bank_id": p.bank_id, "expiry": p.expiry.value,
        "dormancy_days": p.dormancy_after / timedelta(days=1),
        "replacement_grace_days": p.replacement_grace / timedelta(days=1),
        "renewal_window_days": p.renewal_window / timedelta(days=1),
        "atc_window": p.atc_window,
    }  # fmt: skip


def bank_from_dict(raw: Mapping[str, object], where: str) -> BankPolicy:
    """A bank policy from its JSON/TOML form (days as numbers); BranchError naming ``where``."""
    known = {"bank_id", "expiry", "dormancy_days", "replacement_grace_days",
             "renewal_window_days", "atc_window"}  # fmt: skip
    unknown = sorted(set(raw) - known)
    if unknown:
        raise BranchError(f"{where}: unknown field(s) {', '.join(unknown)}")
    kw: dict[str, object] = {}
    try:
        if "expiry" in raw:
            kw["expiry"] = ExpiryPolicy(str(raw["expiry"]))
        for name, field in (("dormancy_days", "dormancy_after"),
                            ("replacement_grace_days", "replacement_grace"),
                            ("renewal_window_days", "renewal_window")):  # fmt: skip
            if name in raw:
                value = raw[name]
                if not isinstance(value, int | float) or isinstance(value, bool):
                    raise BranchError(f"{where}.{name}: must be a number of days")
                kw[field] = timedelta(days=value)
        if "atc_window" in raw:
            kw["atc_window"] = raw["atc_window"]
        return BankPolicy(str(raw["bank_id"]), **kw)  # type: ignore[arg-type]
    except BranchError:
        raise
    except KeyError:
        raise BranchError(f"{where}: bank_id missing") from None
    except (ValueError, TypeError) as exc:
        raise BranchError(f"{where}: {exc}") from None


def banks_to_json(policies: Iterable[BankPolicy]) -> str:
    return json.dumps([bank_to_dict(p) for p in policies], sort_keys=True)


def banks_from_json(text: str | None) -> list[BankPolicy]:
    if not text:
        return []
    try:
        rows = json.loads(text)
    except ValueError:
        raise BranchError(f"meta {BANKS_META_KEY}: not JSON") from None
    return [bank_from_dict(r, f"meta {BANKS_META_KEY}[{i}]") for i, r in enumerate(rows)]


def merge_banks(*groups: Iterable[BankPolicy]) -> list[BankPolicy]:
    """Later groups win for a bank id they name again."""
    out: dict[str, BankPolicy] = {}
    for group in groups:
        for p in group:
            out[p.bank_id] = p
    return [out[k] for k in sorted(out)]


# -- keys ---------------------------------------------------------------------------------


def imk_id(profile: CardProfile) -> str:
    """The id a profile's (TEST) issuer master key has in the key store (held in memory)."""
    return f"imk:{profile.source}"


def key_store(kek: bytes, profiles: Iterable[CardProfile] = ()) -> KeyStore:
    """The issuer's keys: the KEK, and the IMKs of the profiles about to be issued."""
    return KeyStore(kek, {imk_id(p): p.crypto.issuer_master_key for p in profiles})


# -- issuing and the lifecycle ------------------------------------------------------------


def end_of(day: date) -> datetime:
    """The first moment after ``day`` where the cards are (how a bank records an expiry)."""
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=CARD_TZ)


def expiry_of(profile: CardProfile) -> datetime:
    """The bank's record of the card's expiry: the end of the chip's expiry date."""
    return end_of(profile.expiry)


def account_id_of(token: str) -> str:
    return "acct-" + token[:16]


@dataclass(frozen=True, slots=True)
class Issued:
    card: Card
    account: Account


def issue(
    issuer: Issuer,
    profile: CardProfile,
    *,
    bank: str,
    balance: int,
    currency: str,
    now: datetime,
    expires_at: datetime | None = None,
) -> Issued:
    """Open the card's account (with ``balance``) and issue the card, not yet activated."""
    token = issuer.token_of(profile.pan)
    if token in issuer.cards:
        raise BranchError(f"card {issuer.cards[token].masked_pan} is already issued here")
    account_id = account_id_of(token)
    try:
        account = issuer.open_account(account_id, bank, currency, now, balance)
        card = issuer.issue_card(
            profile.pan, profile.psn, account_id,
            scheme=profile.crypto.cryptogram, imk_id=imk_id(profile),
            expires_at=expires_at or expiry_of(profile), now=now,
        )  # fmt: skip
    except IssuerError as exc:
        raise BranchError(_message(exc)) from None
    return Issued(card, account)


def act(
    issuer: Issuer, token: str, action: str, now: datetime, *, amount: int | None = None,
    ref: str | None = None,
) -> Card | Account:
    """One branch action by name (``deposit`` and ``withdraw`` need ``amount``; ``ref``, the
    branch's request id, names their journal row); what it changed."""
    try:
        card = issuer.card(token)
        if action in MONEY_ACTIONS:
            if amount is None:
                raise BranchError(f"{action} needs an amount")
            move = issuer.deposit if action == "deposit" else issuer.withdraw
            return move(card.account_id, amount, now, ref=ref)
        if action == "confirm-transfer":
            return issuer.confirm_balance_transfer(token, now)
        event = EVENTS.get(action)
        if event is None:
            raise BranchError(f"unknown action {action!r} (one of {', '.join(ACTIONS)})")
        return issuer.apply(token, event, now)
    except IssuerError as exc:
        raise BranchError(_message(exc)) from None


def transfer(
    issuer: Issuer, token: str, to_token: str, now: datetime, *, amount: int | None = None,
    ref: str | None = None,
) -> tuple[Account, Account]:
    """Move money from one card's account to another's at the counter (``amount`` None: all
    that is available), e.g. a card replaced at another bank to its new card.  A replaced
    card's account emptied this way closes."""
    try:
        source = issuer.account(issuer.card(token).account_id)
        target = issuer.card(to_token).account_id
        if source.status is AccountStatus.CLOSED:
            raise BranchError(f"account {source.account_id!r} is closed")
        if amount is None:
            amount = source.available
            if amount <= 0:
                raise BranchError(f"account {source.account_id} has nothing available to "
                                  f"transfer (balance {source.balance}, held {source.held})")
        return issuer.transfer(source.account_id, target, amount, now, ref=ref)
    except IssuerError as exc:
        raise BranchError(_message(exc)) from None


def housekeeping(issuer: Issuer, now: datetime) -> list[Account]:
    """What the bank's clock makes due before any branch work: old accounts of cards replaced
    at another bank whose grace is over close, their balance moved to the new card's account.
    The accounts closed (as they were before)."""
    try:
        return issuer.close_after_grace(now)
    except IssuerError as exc:
        raise BranchError(_message(exc)) from None


def replace(
    issuer: Issuer,
    old_token: str,
    new: CardProfile,
    *,
    reason: ReplaceReason,
    now: datetime,
    bank: str | None = None,
    balance: int = 0,
) -> Issued:
    """A new card for an old one; the new card gets an account of its own (same bank unless
    told), where the old balance moves once the holder confirms (same bank only)."""
    try:
        old = issuer.card(old_token)
        if new.crypto.cryptogram != old.scheme:
            raise BranchError(
                f"the new card makes {new.crypto.cryptogram} cryptograms, the old one "
                f"{old.scheme}: a replacement keeps the scheme"
            )
        old_account = issuer.account(old.account_id)
        new_token = issuer.token_of(new.pan)
        account_id = account_id_of(new_token)
        account = issuer.open_account(account_id, bank or old.bank_id, old_account.currency, now,
                                      balance)  # fmt: skip
        card = issuer.replace(
            old_token, new.pan, new.psn, account_id, reason=reason, imk_id=imk_id(new),
            expires_at=expiry_of(new), now=now,
        )  # fmt: skip
    except IssuerError as exc:
        raise BranchError(_message(exc)) from None
    return Issued(card, account)


def _message(exc: Exception) -> str:
    # KeyError subclasses quote their message in str(); take the text itself.
    return str(exc.args[0]) if exc.args else type(exc).__name__
