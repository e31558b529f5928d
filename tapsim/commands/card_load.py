"""`tapsim card load`: recharge a card's T-Union e-purse from the holder's account at the bank.

The command is a branch terminal: it opens the bank of ``--db`` (the issuer the back office
uses), talks to the card (the persisted virtual card `tapsim terminal run` and `tapsim card
serve` use, or a PC/SC reader) and runs :class:`issuer.epurse_load.LoadHost`: loads left
pending by an earlier run are settled first, then the new one (issuer/README.md, "E-purse
loads").  Exit codes: 0 loaded (or this request was already loaded), 1 refused or left
pending, 2 a bad request (unknown card, no database, bad amount).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tapsim.checks import check_output_file, integer
from tapsim.errors import UserError

if TYPE_CHECKING:
    from collections.abc import Callable

    from issuer.epurse_load import LoadOutcome

MAX_LOAD = 0xFFFF_FFFF  # issuer.epurse_load.MAX_LOAD: INITIALIZE FOR LOAD's 4-byte amount
DEFAULT_TERMINAL = "000000010001"  # the branch terminal number (6 bytes, hex)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_TERMINAL = re.compile(r"[0-9A-Fa-f]{12}")


def _request_id(text: str) -> str:
    if not _REQUEST_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r}: 1 to 64 characters of letters, digits and . _ : -")
    return text


def _terminal(text: str) -> str:
    if not _TERMINAL.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r}: the terminal number is 12 hex digits")
    return text.upper()


def register_card_load(cs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`tapsim card load` (a sub-command of `card`)."""
    from tapsim.commands.backoffice import add_db_argument  # noqa: PLC0415 - parser only

    p = cs.add_parser(
        "load", help="recharge the card's T-Union e-purse from its bank account",
        description="Move money from the holder's account at the bank of --db to the chip's "
                    "e-purse with the e-purse load transaction (INITIALIZE FOR LOAD, MAC1, "
                    "CREDIT FOR LOAD with MAC2, TAC). A load left pending by an earlier run "
                    "(card removed, answer lost) is settled first by asking the card.")
    p.add_argument("--card", required=True, metavar="NAME|PATH",
                   help="the card: a built-in profile or a .toml/.json path, issued at the "
                        "bank with `tapsim card issue`")
    p.add_argument("--amount", type=integer(1, MAX_LOAD, "minor units"), metavar="MINOR",
                   help=f"amount in minor units (fen), 1 to {MAX_LOAD:,} (required unless "
                        "--settle)")
    p.add_argument("--settle", action="store_true",
                   help="only settle this card's pending loads by asking the card; no new load")
    add_db_argument(p)
    p.add_argument("--request-id", type=_request_id, default=None, metavar="ID",
                   help="the request's idempotency key: the same id again is answered from "
                        "the bank's record, never loaded twice (default: a new id)")
    p.add_argument("--reader", default=None, metavar="pcsc:NAME",
                   help="a PC/SC reader holding the card (default: the virtual card, whose "
                        "state `tapsim terminal run --card NAME` keeps)")
    p.add_argument("--state", type=Path, default=None, metavar="FILE",
                   help="the virtual card's state file (default: the one `tapsim terminal "
                        "run` and `tapsim tap` use for this card)")
    p.add_argument("--terminal", type=_terminal, default=DEFAULT_TERMINAL, metavar="HEX",
                   help=f"the branch terminal number, 12 hex digits (default {DEFAULT_TERMINAL})")
    p.add_argument("--at", default=None, metavar="ISO-TIME",
                   help="the branch's clock, with a UTC offset (default: now)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=load_main)


def _outcome_dict(o: LoadOutcome) -> dict[str, Any]:
    r = o.record
    return {"load_id": r.load_id, "state": r.state.value, "reason": r.reason,
            "message": o.message, "amount": r.amount, "currency": r.currency,
            "epurse_issuer": r.epurse_issuer, "online_serial": r.online_serial,
            "balance_before": r.balance_before, "balance_after": o.balance_after,
            "tac": r.tac, "repeated": o.repeated}  # fmt: skip


def load_main(args: argparse.Namespace) -> int:
    from emv.card.card import VirtualCard  # noqa: PLC0415
    from emv.card.image import personalise  # noqa: PLC0415
    from issuer.epurse_load import (  # noqa: PLC0415
        LoadCardError,
        LoadHost,
        LoadKeys,
        LoadState,
        LoadStoreError,
    )
    from issuer.errors import IssuerError  # noqa: PLC0415
    from issuer.load_sql import SqlLoadStore  # noqa: PLC0415
    from tapsim.commands.account import _Branch, _profile  # noqa: PLC0415
    from tapsim.commands.backoffice import money, parse_at  # noqa: PLC0415
    from tapsim.state import card_state_path, load_card_state, save_card_state  # noqa: PLC0415

    now = parse_at(args.at)
    if args.settle == (args.amount is not None):
        raise UserError("card load: give --amount for a load, or --settle alone to settle "
                        "the card's pending loads")
    profile = _profile(args.card)
    purse = next((a for a in profile.applications if a.kind == "epurse"), None)
    if purse is None:
        raise UserError(f"card {args.card!r} has no T-Union e-purse (see `tapsim card show "
                        f"{args.card}`)")
    if args.reader is not None and not args.reader.startswith("pcsc:"):
        raise UserError(f"--reader {args.reader!r}: write pcsc:NAME (a PC/SC reader)")
    state_path = None
    if args.reader is None:
        state_path = args.state if args.state is not None else card_state_path(args.card)
        check_output_file(state_path, "--state")
    branch = _Branch(args, [profile])
    close_reader: Callable[[], None] = lambda: None  # noqa: E731
    card: VirtualCard | None = None
    try:
        token = branch.token(args.card)
        try:
            store = SqlLoadStore(branch.store)
        except LoadStoreError as exc:
            raise UserError(str(exc)) from None
        host = LoadHost(branch.issuer, store,
                        keys=LoadKeys(purse.load_key, purse.tac_key),
                        terminal_id=bytes.fromhex(args.terminal), clock=lambda: now,
                        max_balance=purse.max_balance, reload=branch.fresh_issuer)  # fmt: skip
        if args.reader is not None:
            transceive, close_reader = _pcsc(args.reader[len("pcsc:"):])
        else:
            card = VirtualCard(personalise(profile), load_card_state(state_path))
            card.power_on()
            transceive = card.process
        request_id = args.request_id or f"load-{uuid.uuid4().hex[:16]}"
        try:
            if args.settle:
                settled = host.resolve(transceive, token)
            else:
                outcome = host.load(transceive, token=token, amount=args.amount,
                                    load_id=request_id)
        except LoadCardError as exc:
            print(f"tapsim: card load: {exc}", file=sys.stderr)
            return 1
        except LoadStoreError as exc:
            print(f"tapsim: card load: the bank's database failed before the card was "
                  f"credited; nothing moved ({exc})", file=sys.stderr)
            return 1
        except IssuerError as exc:
            raise UserError(f"card load: {exc}") from None
        issuer = host.issuer  # as of the load's last write (it reads the database again)
        account = issuer.account(issuer.card(token).account_id)
        masked = issuer.card(token).masked_pan
    finally:
        if card is not None and state_path is not None:
            save_card_state(card.state, state_path)  # the chip keeps whatever it did
        close_reader()
        branch.close()
    if args.settle:
        return _print_settled(settled, masked, args.json)
    out = _outcome_dict(outcome)
    out["card"] = masked
    out["resolved"] = [_outcome_dict(r) for r in outcome.resolved]
    out["account"] = {"account_id": account.account_id, "balance": account.balance,
                      "held": account.held, "currency": account.currency}  # fmt: skip
    ok = outcome.state is LoadState.CAPTURED
    if args.json:
        print(json.dumps(out, indent=1))
        return 0 if ok else 1
    cur = account.currency
    for r in out["resolved"]:
        print(f"earlier load {r['load_id']} ({money(r['amount'], cur)}): {r['message']}")
    what = f"load {money(args.amount, cur)} {cur} onto {masked} ({request_id})"
    print(f"{what}: {outcome.message}")
    if ok and outcome.balance_after is not None:
        print(f"e-purse     {money(outcome.record.balance_before or 0, cur)} -> "
              f"{money(outcome.balance_after, cur)} {cur} (TAC {outcome.record.tac}, verified)")
    print(f"account     {account.account_id}: balance {money(account.balance, cur)} {cur}, "
          f"held {money(account.held, cur)}")
    return 0 if ok else 1


def _print_settled(settled: list[LoadOutcome], masked: str, as_json: bool) -> int:
    """`--settle`: each pending load's outcome; exit 1 while one is still pending."""
    from issuer.epurse_load import LoadState  # noqa: PLC0415
    from tapsim.commands.backoffice import money  # noqa: PLC0415

    still = any(o.state is LoadState.PENDING for o in settled)
    if as_json:
        print(json.dumps({"card": masked, "settled": [_outcome_dict(o) for o in settled]},
                         indent=1))
        return 1 if still else 0
    if not settled:
        print(f"{masked}: no pending load")
    for o in settled:
        print(f"load {o.record.load_id} ({money(o.record.amount, o.record.currency)} "
              f"{o.record.currency}): {o.message}")
    return 1 if still else 0


def _pcsc(name: str) -> tuple[Callable[[bytes], bytes], Callable[[], None]]:
    """A PC/SC reader's transceive (card powered) and its close."""
    from terminal.readers import PcscReader, ReaderError  # noqa: PLC0415

    try:
        reader = PcscReader(name)
        reader.power_on()
    except ReaderError as exc:
        raise UserError(f"--reader pcsc:{name}: {exc}") from None
    return reader.transceive, reader.close
