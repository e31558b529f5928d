"""`tapsim account ...` and `tapsim card issue`: the bank branch of a transaction core's database.

Every command works on the issuer's records of one database (``--db``): issue a card with its
account, show it, deposit, withdraw, transfer, move it through its lifecycle, run the bank's
nightly sweep and reconcile the accounts with the bank's journal (issuer/README.md).  ``--at``
sets the branch's clock (default now), so a simulation can age an account into dormancy.
Before any branch work the clock's due closings run (a card replaced at another bank: its old
account closes once the grace period is over, its balance moved to the new card).
"""

from __future__ import annotations

import argparse
import json
import os
import re
from typing import TYPE_CHECKING, Any

from tapsim.checks import MAX_AMOUNT, amount, positive_amount
from tapsim.commands.backoffice import (
    DEFAULT_DB,
    add_db_argument,
    db_banks,
    kek,
    missing_sqlite_file,
    money,
    open_db,
    parse_at,
)
from tapsim.commands.tap import token_key
from tapsim.errors import UserError

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from backoffice.storage import SqlStore
    from emv.card.profile import CardProfile
    from issuer.models import Account, Card
    from issuer.service import Issuer

# Written out for the parser (tested equal to the domain's): backoffice.branch.DEFAULT_BANK
# and issuer.models.ReplaceReason's values.
DEFAULT_BANK = "ICBC"
REPLACE_REASONS = ("renewal", "loss", "damage")

_TOKEN = re.compile(r"[0-9a-f]{32}")
_REQUEST_ID = re.compile(r"[!-~]{1,64}")  # printable ASCII, no spaces

# sub-command -> (help, what it does at the branch)
LIFECYCLE: dict[str, str] = {
    "activate": "activate the financial function (first time, or after sealing; counts as "
                "account movement)",
    "lost": "report the card lost (挂失)",
    "unfreeze": "lift a loss report (解挂): back to the state before it",
    "seal": "seal: social security status sealed (封存)",
    "dormant": "mark dormant: no account movement for the bank's dormancy period",
    "restore": "restore a dormant account at the branch (counts as account movement)",
    "expire": "expire the card (on or after its expiry date)",
    "cancel": "cancel the card and close its account (注销)",
}


def _common(p: argparse.ArgumentParser, *, card: bool = True) -> None:
    add_db_argument(p)
    if card:
        p.add_argument("--card", required=True, metavar="TOKEN|PROFILE",
                       help="the card's PAN token (32 hex digits), or its card profile "
                            "(built-in name or .toml/.json path)")  # fmt: skip
    p.add_argument("--at", default=None, metavar="ISO-TIME",
                   help="the branch's clock, with a UTC offset (default: now)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _request_id(p: argparse.ArgumentParser) -> None:
    p.add_argument("--request-id", default=None, metavar="ID",
                   help="the branch's id for this request (1-64 printable characters): the "
                        "same id again moves nothing twice (default: a new id each run)")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    acc = sub.add_parser("account", help="a card's bank account and lifecycle, in a database")
    cs = acc.add_subparsers(dest="account_command", metavar="ACTION")
    cs.required = True
    show = cs.add_parser("show", help="the card, its account, the state the bank acts on and "
                                      "why, and the back office's view of it")  # fmt: skip
    _common(show)
    show.set_defaults(func=show_main)
    dep = cs.add_parser("deposit", help="deposit money at the branch (counter business)")
    _common(dep)
    dep.add_argument("--amount", type=positive_amount, required=True, metavar="MINOR",
                     help=f"amount in minor units (fen), 1 to {MAX_AMOUNT:,}")
    _request_id(dep)
    dep.set_defaults(func=action_main, action="deposit")
    wd = cs.add_parser("withdraw", help="pay money out at the branch (counter business, any "
                                        "card state: e.g. a replaced card's old account)")
    _common(wd)
    wd.add_argument("--amount", type=positive_amount, required=True, metavar="MINOR",
                    help=f"amount in minor units (fen), 1 to {MAX_AMOUNT:,}, at most the "
                         "available balance")
    _request_id(wd)
    wd.set_defaults(func=action_main, action="withdraw")
    tr = cs.add_parser("transfer", help="move money from this card's account to another card's "
                                        "(counter business; a replaced card's old account "
                                        "emptied this way closes)")  # fmt: skip
    _common(tr)
    tr.add_argument("--to", required=True, metavar="TOKEN|PROFILE",
                    help="the card whose account receives the money")
    tr.add_argument("--amount", type=positive_amount, default=None, metavar="MINOR",
                    help=f"amount in minor units (fen), 1 to {MAX_AMOUNT:,} (default: all "
                         "that is available)")
    _request_id(tr)
    tr.set_defaults(func=transfer_main)
    sw = cs.add_parser("sweep", help="the bank's nightly job: expiry and dormancy that are due, "
                                     "old accounts of replaced cards closed after grace")
    _common(sw, card=False)
    sw.set_defaults(func=sweep_main)
    rc = cs.add_parser("reconcile",
                       help="check every account's balance and holds against the bank's "
                            "journal rows; exit 1 on a mismatch")  # fmt: skip
    add_db_argument(rc)
    rc.add_argument("--json", action="store_true", help="print one JSON object")
    rc.set_defaults(func=reconcile_main)
    for name, text in LIFECYCLE.items():
        p = cs.add_parser(name, help=text)
        _common(p)
        p.set_defaults(func=action_main, action=name)
    rep = cs.add_parser("replace", help="issue a new card for this one (old card: replaced)")
    _common(rep)
    rep.add_argument("--new-profile", required=True, metavar="NAME|PATH",
                     help="the new card's profile")
    rep.add_argument("--new-pan", default=None, metavar="PAN",
                     help="another TEST PAN for the new card (default: the profile's)")
    rep.add_argument("--reason", choices=REPLACE_REASONS, default="loss",
                     help="renewal (from the 60th day before the card's last valid day, that "
                          "day included), loss or damage")
    rep.add_argument("--bank", default=None, metavar="ID",
                     help="the new card's bank (default: the old card's; at another bank the "
                          "old account closes after the bank's grace period, its balance "
                          "moved to the new card unless withdrawn or transferred before)")
    rep.add_argument("--balance", type=amount, default=0, metavar="MINOR",
                     help=f"opening balance of the new card's account, 0 to {MAX_AMOUNT:,} "
                          "minor units")
    rep.set_defaults(func=replace_main)
    conf = cs.add_parser("confirm-transfer",
                         help="the holder confirms: the old card's balance moves to the new "
                              "card's account (same bank)")  # fmt: skip
    _common(conf)
    conf.set_defaults(func=action_main, action="confirm-transfer")


def register_card_issue(cs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`tapsim card issue` (a sub-command of `card`, kept here with the other branch work)."""
    p = cs.add_parser("issue", help="open an account and issue a card on it, in a database",
                      description="The card starts with its financial function not activated "
                                  "(`tapsim account activate`, or --activate).")  # fmt: skip
    p.add_argument("--profile", required=True, metavar="NAME|PATH",
                   help="built-in card profile or a .toml/.json path")
    p.add_argument("--pan", default=None, metavar="PAN",
                   help="another TEST PAN on the same profile (default: the profile's)")
    p.add_argument("--balance", type=amount, default=0, metavar="MINOR",
                   help=f"opening balance in minor units, 0 to {MAX_AMOUNT:,} (default 0)")
    p.add_argument("--bank", default=DEFAULT_BANK, metavar="ID",
                   help=f"the card's bank (default {DEFAULT_BANK}; built-in ICBC, BOC, CCB)")
    p.add_argument("--currency", default="CNY", metavar="ISO4217",
                   help="the account's currency, an ISO 4217 code (default CNY)")
    p.add_argument("--activate", action="store_true", help="activate it at once")
    _common(p, card=False)
    p.set_defaults(func=issue_main)


# -- helpers ------------------------------------------------------------------------------


def check_currency(code: str) -> None:
    """An ISO 4217 code that tapsim knows (its minor units), else a UserError."""
    from fare.currency import is_currency  # noqa: PLC0415

    if not is_currency(code):
        hint = f" (codes are upper case: {code.upper()})" if is_currency(code.upper()) else ""
        raise UserError(f"--currency {code!r} is not an ISO 4217 currency code{hint}; "
                        "e.g. CNY, EUR, JPY")


def _profile(name: str, pan: str | None = None) -> CardProfile:
    import dataclasses  # noqa: PLC0415

    from emv.card.profile import ProfileError, load_profile  # noqa: PLC0415
    from emv.pan import PanError, luhn_ok, normalize_pan  # noqa: PLC0415

    try:
        profile = load_profile(name)
    except ProfileError as exc:
        raise UserError(str(exc)) from None
    if pan is None:
        return profile
    try:
        clear = normalize_pan(pan)
    except PanError as exc:
        raise UserError(f"--pan: {exc}") from None
    if not luhn_ok(clear):
        raise UserError("--pan: Luhn check digit is wrong")
    return dataclasses.replace(profile, pan=clear)


class _Branch:
    """The issuer of a database, opened for one branch operation."""

    def __init__(self, args: argparse.Namespace, profiles: list[CardProfile] | None = None,
                 *, create: bool = False, read_only: bool = False, write: bool = False):
        from backoffice.branch import key_store  # noqa: PLC0415
        from issuer.service import Issuer  # noqa: PLC0415

        # Only `card issue` may create a database; the others need a card in one, and
        # opening a mistyped SQLite path would leave an empty database behind.
        spec = args.db or os.environ.get("TAPSIM_DB") or DEFAULT_DB
        if not create and missing_sqlite_file(args.db) is not None:
            raise UserError(f"no database {spec} (tapsim card issue creates one)")
        self.store: SqlStore = open_db(args.db, read_only=read_only)
        try:
            if write:  # the issuer lock from this read to save(): a running core waits, redoes
                self.store.hold_issuer()
            banks = db_banks(self.store)
            keys = key_store(kek(), profiles or [])
            # The issuer as the database holds it now (a long operation, `card load`, reads
            # it again before each write: issuer.epurse_load.LoadHost._fresh).
            self.fresh_issuer: Callable[[], Issuer] = lambda: Issuer(
                keys, banks, token_key(), self.store.load_issuer())
            self.issuer = self.fresh_issuer()
        except BaseException:
            self.close()
            raise

    def token(self, spec: str) -> str:
        """The card's token; a UserError for an unknown card, or one whose stored account
        no command can show (a currency stored before tapsim checked it)."""
        from fare.currency import is_currency  # noqa: PLC0415

        token = spec if _TOKEN.fullmatch(spec) else self.issuer.token_of(_profile(spec).pan)
        if token not in self.issuer.cards:
            raise UserError(f"no card {spec!r} in {self.store.url}")
        account = self.issuer.account(self.issuer.cards[token].account_id)
        if not is_currency(account.currency):
            raise UserError(f"card {spec!r} in {self.store.url}: its account "
                            f"{account.account_id} is in {account.currency!r}, not an ISO 4217 "
                            "currency code (stored by an older tapsim that did not check it)")
        return token

    def housekeeping(self, now: datetime) -> None:
        """The closings the bank's clock makes due (backoffice.branch.housekeeping)."""
        from backoffice.branch import BranchError, housekeeping  # noqa: PLC0415

        try:
            housekeeping(self.issuer, now)
        except BranchError as exc:
            raise UserError(str(exc)) from None

    def save(self) -> None:
        from backoffice.storage import StorageError  # noqa: PLC0415

        try:
            self.store.save_issuer(self.issuer.drain_changes())
        except StorageError as exc:
            raise UserError(f"{self.store.url}: nothing was written: {exc}") from None

    def close(self) -> None:
        try:
            self.store.release_issuer()  # not saved: nothing written
        finally:
            self.store.close()


def _card_dict(issuer: Issuer, card: Card, now: datetime) -> dict[str, Any]:
    from issuer.authorization import state_code  # noqa: PLC0415
    from issuer.codes import DESCRIPTIONS  # noqa: PLC0415
    from issuer.lifecycle import explain  # noqa: PLC0415

    account = issuer.account(card.account_id)
    policy = issuer.policy(card.bank_id)
    effective, why = explain(card, account, now, policy)
    code = state_code(card, account, now, policy)
    out: dict[str, Any] = {
        "token": card.pan_token, "masked_pan": card.masked_pan, "psn": card.psn,
        "bank": card.bank_id, "scheme": card.scheme, "state": card.state.value,
        "state_changed_at": card.state_changed_at.isoformat(),
        "effective_state": effective.value, "why": why, "at": now.isoformat(),
        "payment_code": code.value, "payment_meaning": DESCRIPTIONS[code],
        "expires_at": card.expires_at.isoformat(),
        "account": _account_dict(account),
    }  # fmt: skip
    if card.state_before_lost is not None:
        out["state_before_lost"] = card.state_before_lost.value
    if card.replacement is not None:
        rep = card.replacement
        out["replacement"] = {"new_token": rep.new_token, "same_bank": rep.same_bank,
                              "reason": rep.reason.value, "at": rep.at.isoformat(),
                              "balance_moved": rep.balance_moved}  # fmt: skip
    return out


def _account_dict(a: Account) -> dict[str, Any]:
    return {"account_id": a.account_id, "bank": a.bank_id, "currency": a.currency,
            "balance": a.balance, "held": a.held, "available": a.available,
            "status": a.status.value, "last_movement": a.last_movement.isoformat()}  # fmt: skip


def _print_card(d: dict[str, Any]) -> None:
    a = d["account"]
    cur = a["currency"]
    print(f"card        {d['masked_pan']} (token {d['token']})")
    print(f"state       {d['state']} since {d['state_changed_at']} (stored)"
          + (f" (before the loss report: {d['state_before_lost']})"
             if "state_before_lost" in d else ""))  # fmt: skip
    print(f"acts as     {d['effective_state']} at {d['at'][:19]}: {d['why']}")
    print(f"payment     {d['payment_code']} {d['payment_meaning']}")
    print(f"bank        {d['bank']}, {d['scheme']} cryptograms, expires {d['expires_at']}")
    print(f"account     {a['account_id']} {a['status']}: balance {money(a['balance'], cur)} "
          f"{cur}, held {money(a['held'], cur)}, available {money(a['available'], cur)}")
    if "replacement" in d:
        r = d["replacement"]
        print(f"replaced    by {r['new_token']} ({r['reason']}, "
              f"{'same bank' if r['same_bank'] else 'other bank'}, balance "
              f"{'moved' if r['balance_moved'] else 'not moved yet'})")


# -- commands -----------------------------------------------------------------------------


def issue_main(args: argparse.Namespace) -> int:
    from backoffice.branch import BranchError, act, issue  # noqa: PLC0415
    from issuer.models import Card  # noqa: PLC0415

    profile = _profile(args.profile, args.pan)
    now = parse_at(args.at)
    check_currency(args.currency)
    branch = _Branch(args, [profile], create=True, write=True)
    try:
        branch.housekeeping(now)
        try:
            done = issue(branch.issuer, profile, bank=args.bank, balance=args.balance,
                         currency=args.currency, now=now)  # fmt: skip
            card = done.card
            if args.activate:
                result = act(branch.issuer, card.pan_token, "activate", now)
                assert isinstance(result, Card)
                card = result
        except BranchError as exc:
            raise UserError(str(exc)) from None
        branch.save()
        out = _card_dict(branch.issuer, card, now)
    finally:
        branch.close()
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        print(f"issued {out['masked_pan']} at {out['bank']} ({out['state']})")
        _print_card(out)
    return 0


def show_main(args: argparse.Namespace) -> int:
    from issuer.codes import DESCRIPTIONS  # noqa: PLC0415

    now = parse_at(args.at)  # the clock the effective state is told at
    branch = _Branch(args, read_only=True)  # creates nothing, changes nothing
    try:
        token = branch.token(args.card)
        issuer = branch.issuer
        # What the bank's clock makes due is shown done (in memory only: show writes nothing).
        due = [a.account_id for a in issuer.close_after_grace(now)]
        out = _card_dict(issuer, issuer.card(token), now)
        denied = [r for r in branch.store.deny_list() if r.pan_token == token]
        debts = [d for d in branch.store.debts() if d.pan_token == token
                 and d.status in ("open", "written_off")]  # fmt: skip
        auths = sorted((a for a in issuer.auths.values() if a.pan_token == token),
                       key=lambda a: (a.at, a.request_id))[-10:]  # fmt: skip
    finally:
        branch.close()
    out["back_office"] = {
        "deny_listed": bool(denied),
        "deny_reason": denied[0].reason if denied else None,
        "debts": [{"debt": d.debt_id, "amount": d.amount, "status": d.status,
                   "attempts": d.attempts, "last_code": d.last_code} for d in debts],
    }  # fmt: skip
    out["due_closings"] = due
    out["recent_authorizations"] = [
        {"request": a.request_id, "kind": a.kind.value, "amount": a.amount, "code": a.code.value,
         "meaning": DESCRIPTIONS[a.code], "at": a.at.isoformat()} for a in auths
    ]  # fmt: skip
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    _print_card(out)
    if due:
        print(f"due         closed at this clock after the grace period: {', '.join(due)} "
              "(written by the next branch command or `tapsim account sweep`)")
    cur = out["account"]["currency"]
    bo = out["back_office"]
    print(f"deny list   {'yes (' + str(bo['deny_reason']) + ')' if bo['deny_listed'] else 'no'}")
    for d in bo["debts"]:
        print(f"debt        {d['debt']} {money(d['amount'], cur)} {d['status']} after "
              f"{d['attempts']} retr{'y' if d['attempts'] == 1 else 'ies'} (last {d['last_code']})")
    for a in out["recent_authorizations"]:
        print(f"auth        {a['at'][:19]} {a['kind']} {money(a['amount'], cur)}: {a['code']} "
              f"{a['meaning']}")
    return 0


def _request(args: argparse.Namespace) -> str | None:
    rid: str | None = getattr(args, "request_id", None)
    if rid is not None and not _REQUEST_ID.fullmatch(rid):
        raise UserError(f"--request-id {rid!r}: 1 to 64 printable characters without spaces")
    return rid


def _done_before(branch: _Branch, entry_id: str, rid: str, account_id: str,
                 amount: int | None) -> bool:
    """True when the journal already holds this request (the same account and amount); a
    UserError when the request id was used for something else."""
    from issuer.journal import account_ledger  # noqa: PLC0415
    from issuer.load_sql import journal_entry  # noqa: PLC0415

    entry = journal_entry(branch.store, entry_id)
    if entry is None:
        return False
    if account_ledger(account_id) not in (entry.debit, entry.credit) or (
            amount is not None and entry.amount != amount):
        raise UserError(f"--request-id {rid!r} was already used for another account or amount "
                        f"({entry.amount} on {entry.at.isoformat()[:19]})")
    return True


def action_main(args: argparse.Namespace) -> int:
    from backoffice.branch import MONEY_ACTIONS, BranchError, act  # noqa: PLC0415

    now = parse_at(args.at)
    rid = _request(args)
    branch = _Branch(args, write=True)
    try:
        token = branch.token(args.card)
        amount = getattr(args, "amount", None)
        account_id = branch.issuer.card(token).account_id
        repeated = rid is not None and args.action in MONEY_ACTIONS and _done_before(
            branch, f"{args.action}:{rid}", rid, account_id, amount)
        if not repeated:
            branch.housekeeping(now)
            try:
                act(branch.issuer, token, args.action, now, amount=amount, ref=rid)
            except BranchError as exc:
                raise UserError(f"{args.action}: {exc}") from None
            branch.save()
        out = _card_dict(branch.issuer, branch.issuer.card(token), now)
    finally:
        branch.close()
    if repeated:
        out["repeated"] = True
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        cur = out["account"]["currency"]
        what = f"{args.action} {money(amount, cur)}" if amount else args.action
        print(f"{what}: already done by request {rid}, nothing moved again" if repeated
              else f"{what}: done")
        _print_card(out)
    return 0


def transfer_main(args: argparse.Namespace) -> int:
    from backoffice.branch import BranchError, transfer  # noqa: PLC0415

    now = parse_at(args.at)
    rid = _request(args)
    branch = _Branch(args, write=True)
    try:
        token = branch.token(args.card)
        to = branch.token(args.to)
        issuer = branch.issuer
        repeated = rid is not None and _done_before(
            branch, f"transfer:{rid}", rid, issuer.card(token).account_id, args.amount)
        if not repeated:
            branch.housekeeping(now)
            before = issuer.account(issuer.card(token).account_id).balance
            try:
                transfer(issuer, token, to, now, amount=args.amount, ref=rid)
            except BranchError as exc:
                raise UserError(f"transfer: {exc}") from None
            moved = before - issuer.account(issuer.card(token).account_id).balance
            branch.save()
        out: dict[str, Any] = {"from": _card_dict(issuer, issuer.card(token), now),
                               "to": _card_dict(issuer, issuer.card(to), now)}  # fmt: skip
    finally:
        branch.close()
    out["repeated"] = repeated
    if not repeated:
        out["amount"] = moved
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    cur = out["from"]["account"]["currency"]
    if repeated:
        print(f"transfer: already done by request {rid}, nothing moved again")
    else:
        print(f"transfer {money(moved, cur)} from {out['from']['masked_pan']} to "
              f"{out['to']['masked_pan']}: done")
    _print_card(out["from"])
    return 0


def sweep_main(args: argparse.Namespace) -> int:
    now = parse_at(args.at)
    branch = _Branch(args, write=True)
    try:
        issuer = branch.issuer
        closed = issuer.close_after_grace(now)
        changed = issuer.sweep(now)
        branch.save()
    finally:
        branch.close()
    out: dict[str, Any] = {
        "at": now.isoformat(),
        "cards": [{"card": c.masked_pan, "token": c.pan_token, "state": c.state.value}
                  for c in changed],
        "closed_accounts": [{"account_id": a.account_id, "balance_moved": a.balance}
                            for a in closed],
    }  # fmt: skip
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    for c in out["cards"]:
        print(f"card        {c['card']} -> {c['state']}")
    for a in out["closed_accounts"]:
        print(f"closed      {a['account_id']} (balance {a['balance_moved']} moved to the new "
              "card's account)")
    print(f"sweep at {now.isoformat()}: {len(changed)} card(s) changed, {len(closed)} old "
          "account(s) closed")
    return 0


def reconcile_main(args: argparse.Namespace) -> int:
    from backoffice.storage import StorageError  # noqa: PLC0415
    from issuer.load_sql import reconcile_db  # noqa: PLC0415

    spec = args.db or os.environ.get("TAPSIM_DB") or DEFAULT_DB
    if missing_sqlite_file(args.db) is not None:
        raise UserError(f"no database {spec}")
    store = open_db(args.db)
    try:
        result = reconcile_db(store)
    except StorageError as exc:
        raise UserError(f"{store.url}: {exc}") from None
    finally:
        store.close()
    out = {
        "ok": result.ok, "accounts": result.accounts, "journal_rows": result.entries,
        "rows_sum": result.total, "bank_side": result.bank_side,
        "mismatches": [{"account": m.account_id, "what": m.what, "stored": m.stored,
                        "journal": m.journal, "message": str(m)} for m in result.mismatches],
    }  # fmt: skip
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        for m in result.mismatches:
            print(f"mismatch    {m}")
        for name, value in result.bank_side.items():
            print(f"ledger      {name} {value:+d}")
        if result.total:
            print(f"mismatch    the journal's sides sum to {result.total}, not 0")
        verdict = "OK" if result.ok else f"MISMATCH ({len(result.mismatches)})"
        print(f"{verdict}: {result.accounts} account(s), {result.entries} journal row(s): "
              + ("balances and holds equal the journal rows" if result.ok
                 else "the bank's rows and its journal disagree"))
    return 0 if result.ok else 1


def replace_main(args: argparse.Namespace) -> int:
    from backoffice.branch import BranchError, replace  # noqa: PLC0415
    from issuer.models import ReplaceReason  # noqa: PLC0415

    now = parse_at(args.at)
    new = _profile(args.new_profile, args.new_pan)
    branch = _Branch(args, [new], write=True)
    try:
        token = branch.token(args.card)
        branch.housekeeping(now)
        try:
            done = replace(branch.issuer, token, new, reason=ReplaceReason(args.reason), now=now,
                           bank=args.bank, balance=args.balance)  # fmt: skip
        except BranchError as exc:
            raise UserError(f"replace: {exc}") from None
        branch.save()
        old = _card_dict(branch.issuer, branch.issuer.card(token), now)
        out = {"old": old, "new": _card_dict(branch.issuer, done.card, now)}
    finally:
        branch.close()
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        print(f"replaced {old['masked_pan']} by {out['new']['masked_pan']} ({args.reason})")
        _print_card(out["new"])
    return 0
