"""`tapsim card list|show`: the built-in card profiles and what is on them."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tapsim.checks import check_output_file
from tapsim.commands.account import register_card_issue
from tapsim.commands.card_load import register_card_load
from tapsim.errors import UserError

if TYPE_CHECKING:
    from emv.card.profile import CardProfile


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("card", help="virtual card profiles")
    cs = p.add_subparsers(dest="card_command", metavar="SUBCOMMAND")
    cs.required = True
    ls = cs.add_parser("list", help="list the built-in card profiles")
    ls.add_argument("--json", action="store_true", help="print the profiles as JSON")
    ls.set_defaults(func=list_cards)
    show = cs.add_parser("show", help="show one card profile (PAN masked, no keys)")
    show.add_argument("name", metavar="NAME|PATH",
                      help="a built-in card (see `tapsim card list`) or a profile .toml/.json")
    show.add_argument("--json", action="store_true", help="print the profile as JSON")
    show.set_defaults(func=show_card)
    serve = cs.add_parser(
        "serve", help="serve a virtual card to pcscd's vpcd driver (a PC/SC virtual reader)",
        description="Connect to the vpcd driver of pcscd (package vsmartcard-vpcd) and answer "
                    "as the card in that virtual reader, until interrupted. PC/SC clients "
                    "(pyscard, `tapsim terminal run --reader pcsc:...`) then tap it.")
    serve.add_argument("name", metavar="NAME|PATH",
                       help="the card to serve: a built-in card or a profile .toml/.json")
    serve.add_argument("--vpcd", nargs="?", const="", default="", metavar="HOST:PORT",
                       help="where vpcd listens (default 127.0.0.1:35963, the first reader)")
    serve.add_argument("--no-quickack", action="store_true",
                       help="do not re-arm TCP_QUICKACK (shows the ~40 ms delayed-ACK cost)")
    serve.add_argument("--state", type=Path, default=None, metavar="FILE",
                       help="load the card's counters from FILE and save them on exit "
                            "(default: a fresh card)")
    serve.set_defaults(func=serve_card)
    # `card issue`: the account and the card at a database's issuer (tapsim/commands/account.py)
    register_card_issue(cs)
    # `card load`: recharge the e-purse from the account (tapsim/commands/card_load.py)
    register_card_load(cs)


def _summary(p: CardProfile) -> dict[str, Any]:
    from emv.pan import mask_pan  # noqa: PLC0415

    return {
        "name": p.name, "description": p.description, "pan_masked": mask_pan(p.pan),
        "psn": p.psn, "expiry": p.expiry.isoformat(), "effective": p.effective.isoformat(),
        "suite": p.crypto.suite, "cryptogram": p.crypto.cryptogram,
        "holder": None if p.holder is None else {
            "category": p.holder.category,
            "birth_date": p.holder.birth_date.isoformat() if p.holder.birth_date else None},
        "applications": [{"aid": a.aid.hex().upper(), "label": a.label, "kind": a.kind,
                          "priority": a.priority,
                          **({"balance": a.balance} if a.kind == "epurse" else
                             {"offline_spending_amount": a.offline_spending_amount})}
                         for a in p.applications],
    }


def serve_card(args: argparse.Namespace) -> int:
    import signal  # noqa: PLC0415
    import threading  # noqa: PLC0415

    from emv.card.card import VirtualCard  # noqa: PLC0415
    from emv.card.image import personalise  # noqa: PLC0415
    from tapsim.state import load_card_state, save_card_state  # noqa: PLC0415
    from terminal import vpcd  # noqa: PLC0415

    try:
        host, port = vpcd.parse_address(args.vpcd)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if args.state is not None:  # saved when the serving ends: checked before it starts
        check_output_file(args.state, "--state")
    card = VirtualCard(personalise(_load(args.name)), load_card_state(args.state))
    stop = threading.Event()
    stopped_by: list[int] = []  # the signal that ended the service (Ctrl-C or SIGTERM)

    def on_signal(signum: int, frame: object) -> None:
        stopped_by.append(signum)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    print(f"serving {args.name} to vpcd at {host}:{port}"
          f"{' (no TCP_QUICKACK)' if args.no_quickack else ''}; Ctrl-C to stop",
          file=sys.stderr, flush=True)
    stats = vpcd.serve(card, host, port, quickack=not args.no_quickack, stop=stop,
                       on_connect=lambda: print("vpcd connected", file=sys.stderr, flush=True))
    if args.state is not None:
        save_card_state(card.state, args.state)  # atomic: a temporary file, then a rename
    saved = f", card state saved to {args.state}" if args.state is not None else ""
    done = f"served {stats.apdus} APDUs over {stats.connections} connection(s){saved}"
    if stopped_by:  # the way this command ends: one line and 128 + the signal, as `tapsim` does
        print(f"tapsim: interrupted: {done}", file=sys.stderr)
        return 128 + stopped_by[0]
    print(done, file=sys.stderr)
    return 0


def _load(name: str) -> CardProfile:
    from emv.card.profile import ProfileError, load_profile  # noqa: PLC0415

    try:
        return load_profile(name)
    except ProfileError as exc:
        raise UserError(str(exc)) from None


def list_cards(args: argparse.Namespace) -> int:
    from emv.card.profile import builtin_names  # noqa: PLC0415

    cards = [_load(n) for n in builtin_names()]
    if args.json:
        print(json.dumps([_summary(c) for c in cards], indent=1))
        return 0
    for c in cards:
        print(f"{c.name:<22} {c.description}")
    return 0


def show_card(args: argparse.Namespace) -> int:
    s = _summary(_load(args.name))
    if args.json:
        print(json.dumps(s, indent=1))
        return 0
    for key in ("name", "description", "pan_masked", "psn", "expiry", "effective", "suite",
                "cryptogram"):
        print(f"{key:<12} {s[key]}")
    if s["holder"]:
        print(f"{'holder':<12} {s['holder']['category']} (born {s['holder']['birth_date']})")
    for a in s["applications"]:
        extra = ", ".join(f"{k} {v}" for k, v in a.items() if k not in ("aid", "label"))
        print(f"{'application':<12} {a['aid']} {a['label']} ({extra})")
    return 0
