"""`tapsim tap`: one tap of a virtual card on a validator kernel, in process."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tapsim.cakeys import add_ca_keys_option, resolve_ca_keys
from tapsim.checks import MAX_AMOUNT, amount, check_output_file
from tapsim.errors import UserError

if TYPE_CHECKING:
    from emv.card.state import CardState
    from emv.epurse.psam import Psam
    from emv.kernel import Exchange, TapResult
    from emv.oda import CaKeys

# TEST token key for demos; a deployment sets TAPSIM_TOKEN_KEY (hex, >= 16 bytes).
DEMO_TOKEN_KEY = b"tapsim-demo-token-key (TEST ONLY)"

# emv.kernel.Outcome's values -> how the human output shows them
OUTCOME_STYLE = {
    "approved-offline": "bold green",
    "online-request": "bold yellow",
    "declined": "bold red",
    "try-another-interface": "bold magenta",
    "end-application": "bold red",
    "try-again": "bold magenta",
}


def token_key() -> bytes:
    raw = os.environ.get("TAPSIM_TOKEN_KEY")
    if not raw:
        return DEMO_TOKEN_KEY
    try:
        key = bytes.fromhex(raw)
    except ValueError:
        raise UserError("TAPSIM_TOKEN_KEY must be hex") from None
    if len(key) < 16:
        raise UserError("TAPSIM_TOKEN_KEY must be at least 16 bytes")
    return key


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "tap", help="tap a virtual card on the kernel, in process",
        description="Run the contactless kernel against a virtual card. The card's counters "
                    "persist between taps (see --state).",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--card", metavar="NAME|PATH",
                        help="a built-in card (see `tapsim card list`) or a profile .toml/.json")
    source.add_argument("--transcript", type=Path, metavar="FILE",
                        help="replay a recorded card: JSON [{\"c\": hex, \"r\": hex}, ...] (the "
                             "shape --json --trace prints); the amount, date, unpredictable "
                             "number, TTQ, country and currency are the recording's")
    p.add_argument("--amount", type=amount, default=200, metavar="FEN",
                   help=f"amount in minor units, 0 to {MAX_AMOUNT:,} (default 200 = 2.00 CNY)")
    p.add_argument("--date", type=dt.date.fromisoformat, default=None, metavar="YYYY-MM-DD",
                   help="transaction date (default: today)")
    p.add_argument("--no-sm", action="store_true",
                   help="a terminal without national (SM) cryptography")
    p.add_argument("--state", type=Path, default=None, metavar="FILE",
                   help="card state file (default: under $XDG_STATE_HOME/tapsim/cards/)")
    p.add_argument("--fresh", action="store_true",
                   help="start from a newly personalised card and do not save its state")
    p.add_argument("--prefer", choices=("quickpass", "epurse"), default="quickpass",
                   help="the validator's first choice; epurse: T-Union e-purse with a TEST PSAM "
                        "(its serial persists beside the card state), QuickPass if it is short")
    add_ca_keys_option(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--trace", action="store_true",
                   help="show every APDU exchanged, decoded (PANs masked)")
    p.add_argument("--record", type=Path, default=None, metavar="FILE",
                   help="write the exchange, unmasked, to FILE as a transcript --transcript "
                        "replays (it holds the card's PAN: keep it like the card)")
    p.set_defaults(func=main)


def tap_once(card_name: str, amount: int, date: dt.date, *, sm: bool = True,
             state: CardState | None = None, trace: list[Exchange] | None = None,
             psam: Psam | None = None, ca_keys: CaKeys | None = None,
             ) -> tuple[TapResult, CardState]:
    """Personalise (cached), tap once, give the result and the card's new state."""
    import secrets  # noqa: PLC0415

    from emv.card.card import VirtualCard  # noqa: PLC0415
    from emv.card.image import personalise  # noqa: PLC0415
    from emv.card.profile import ProfileError, load_profile  # noqa: PLC0415
    from emv.kernel import (  # noqa: PLC0415
        EPURSE_FIRST,
        QUICKPASS_FIRST,
        Kernel,
        TerminalConfig,
        TransactionInput,
        run,
    )
    from emv.oda import builtin_test_ca_keys  # noqa: PLC0415

    try:
        profile = load_profile(card_name)
    except ProfileError as exc:
        raise UserError(str(exc)) from None
    card = VirtualCard(personalise(profile), state)
    card.power_on()
    keys = ca_keys if ca_keys is not None else builtin_test_ca_keys()
    config = TerminalConfig(ca_keys=keys, token_key=token_key(), sm_supported=sm,
                            aid_priority=EPURSE_FIRST if psam is not None else QUICKPASS_FIRST)
    now = dt.datetime.now().astimezone()
    try:
        txn = TransactionInput(amount=amount, date=date,
                               unpredictable_number=secrets.token_bytes(4),
                               at=now if now.date() == date else None)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    result = run(Kernel(config, txn, psam), card.process, trace)
    return result, card.state


VISA_AID = bytes.fromhex("A0000000031010")
"""After UnionPay QuickPass, what a replayed card may be: Visa (qVSDC answers GPO as qPBOC)."""


def transcript_tap(path: Path, date: dt.date, amount: int, *, sm: bool = True,
                   trace: list[Exchange] | None = None, ca_keys: CaKeys | None = None,
                   ) -> TapResult:
    """Run the kernel once on a recorded card (``emv.card.transcript``)."""
    from emv.card.transcript import TranscriptError, TranscriptMiss, load_transcript  # noqa: PLC0415
    from emv.kernel import QUICKPASS_FIRST, Kernel, TerminalConfig, TransactionInput, run  # noqa: PLC0415
    from emv.oda import builtin_test_ca_keys  # noqa: PLC0415

    replay_priority = (*QUICKPASS_FIRST, VISA_AID)
    try:
        transcript = load_transcript(path)
    except TranscriptError as exc:
        raise UserError(str(exc)) from None
    base = TerminalConfig(ca_keys=ca_keys if ca_keys is not None else builtin_test_ca_keys(),
                          token_key=token_key(), sm_supported=sm, aid_priority=replay_priority,
                          partial_aids=frozenset(replay_priority))
    txn = TransactionInput(amount=amount, date=date, unpredictable_number=bytes(4))
    try:
        config, txn = transcript.replay_inputs(base, txn)
    except ValueError as exc:
        raise UserError(f"{path}: the recorded GPO data: {exc}") from None
    transcript.power_on()
    try:
        return run(Kernel(config, txn), transcript.process, trace)
    except TranscriptMiss as exc:
        raise UserError(str(exc)) from None


def result_dict(result: TapResult, trace: list[Exchange] | None) -> dict[str, Any]:
    from emv.describe import safe_hex  # noqa: PLC0415
    from emv.kernel import Outcome  # noqa: PLC0415

    out: dict[str, Any] = {k: (v.value if isinstance(v, Outcome) else v)
                           for k, v in vars(result).items() if k != "epurse_card_number"}
    if trace is not None:
        out["apdus"] = [{"c": e.command.hex().upper(), "r": safe_hex(e.response)} for e in trace]
    return out


def main(args: argparse.Namespace) -> int:
    from tapsim.state import (  # noqa: PLC0415
        card_state_path,
        load_card_state,
        load_psam,
        save_card_state,
        save_psam,
    )

    if args.record is not None:  # written after the tap: checked before it
        check_output_file(args.record, "--record")
    date = args.date or dt.date.today()
    trace: list[Exchange] | None = [] if args.trace or args.record else None
    if args.transcript is not None:
        result = transcript_tap(args.transcript, date, args.amount, sm=not args.no_sm,
                                trace=trace, ca_keys=resolve_ca_keys(args.ca_keys))
        return _show(args, result, trace)
    state_path: Path | None = None
    if not args.fresh:
        state_path = args.state or card_state_path(args.card)
        # written after the tap (with the PSAM's file beside it): checked before it
        check_output_file(state_path, "--state" if args.state else "card state file")
    state = load_card_state(state_path)
    psam_path = state_path.with_name("psam.json") if state_path is not None else None
    psam = load_psam(psam_path) if args.prefer == "epurse" else None
    result, new_state = tap_once(args.card, args.amount, date, sm=not args.no_sm,
                                 state=state, trace=trace, psam=psam,
                                 ca_keys=resolve_ca_keys(args.ca_keys))
    if psam is not None and psam_path is not None:
        save_psam(psam, psam_path)
    if state_path is not None:
        save_card_state(new_state, state_path)
    return _show(args, result, trace)


def _show(args: argparse.Namespace, result: TapResult, trace: list[Exchange] | None) -> int:
    from emv.kernel import Outcome  # noqa: PLC0415

    if args.record is not None and trace is not None:
        recording = [{"c": e.command.hex().upper(), "r": e.response.hex().upper()} for e in trace]
        try:
            args.record.write_text(json.dumps(recording, indent=1) + "\n", encoding="utf-8")
        except OSError as exc:
            raise UserError(f"{args.record}: cannot write the recording ({exc.strerror})") from None
    if not args.trace:
        trace = None
    if args.json:
        print(json.dumps(result_dict(result, trace)))
        return 0 if result.outcome in (Outcome.APPROVED_OFFLINE, Outcome.ONLINE_REQUEST) else 1
    from rich.console import Console  # noqa: PLC0415 - only the human output needs it

    from emv.describe import command_name, response_lines  # noqa: PLC0415

    console = Console(highlight=False, soft_wrap=True)
    if trace is not None:
        for ex in trace:
            name = command_name(ex.command)
            console.print(f"[bold cyan]>> {name}[/]  {ex.command.hex().upper()}")
            for line in response_lines(ex.response):
                console.print(f"[dim]<<[/] {line}")
    style = OUTCOME_STYLE[result.outcome]
    console.print(f"[{style}]{result.outcome.value.upper()}[/]"
                  + (f"  ({result.reason})" if result.reason else ""))
    for key in ("label", "aid", "pan_masked", "atc", "cryptogram", "oda", "oda_ok",
                "available_offline", "holder_category", "epurse_balance_before",
                "epurse_balance_after", "epurse_tac", "psam_serial", "epurse_fallback"):
        value = getattr(result, key)
        if value is not None:
            console.print(f"  {key:<22} {value}")
    return 0 if result.outcome in (Outcome.APPROVED_OFFLINE, Outcome.ONLINE_REQUEST) else 1
