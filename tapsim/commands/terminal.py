"""`tapsim terminal run`: a validator on a reader, with its journal and MQTT link.

The virtual reader keeps its one card in the field, so its taps are the same card a moment
apart, which the duplicate rule (``--duplicate-window``, 30 s) rightly refuses as "Already
tapped".  A demonstration of N rides says ``--duplicate-window 0`` (README.md does); the
default stays the same for every reader, since a validator must decide the same way whatever
reads the card.  The stop and route default to the sample feed ``city``'s (S01, route 1), the
back office's default feed, so a default validator's taps are priced.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tapsim.cakeys import add_ca_keys_option, resolve_ca_keys
from tapsim.checks import (
    DAY_S,
    amount,
    check_broker_tls,
    check_output_file,
    integer,
    number,
)
from tapsim.commands.tap import token_key
from tapsim.errors import UserError

if TYPE_CHECKING:
    from emv.card.state import CardState
    from emv.epurse.psam import Psam
    from terminal.readers import Reader
    from terminal.uplink import Uplink
    from terminal.validator import TapEvent, Validator
    from wire.signing import Verifier

# wire.messages.Action's values, written out for the parser (tested equal)
ACTIONS = ("tap", "tap_on", "tap_off")
# terminal.validator's SAMPLE_STOP and SAMPLE_ROUTE (the sample feed city's), likewise
SAMPLE_STOP = "S01"
SAMPLE_ROUTE = "1"
MAX_TAPS = 1_000_000_000
DENY_KEY_ENV = "TAPSIM_DENYLIST_KEY"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("terminal", help="run a validator")
    ts = p.add_subparsers(dest="terminal_command", metavar="SUBCOMMAND")
    ts.required = True
    run = ts.add_parser(
        "run", help="run a validator: taps from a reader, journal, MQTT uplink",
        description="Tap cards on a reader, decide locally (deny list, duplicates, concession), "
                    "journal every tap durably before showing its outcome, and publish the "
                    "journal to the back office over MQTT (QoS 1). One line per tap on stdout.")
    run.add_argument("--reader", default="virtual", metavar="virtual|pcsc[:NAME]|transcript:FILE",
                     help="the in-process virtual card, a PC/SC reader whose name contains "
                          "NAME (e.g. pcsc:'Virtual PCD 00 00' for a card served over vpcd), or "
                          "a recorded card replayed from FILE (JSON, as `tapsim tap --transcript`)")
    run.add_argument("--card", default="sscard3", metavar="NAME|PATH",
                     help="the virtual card in the field (virtual reader; default sscard3); "
                          "its counters persist like `tapsim tap`'s")
    run.add_argument("--fresh-card", action="store_true",
                     help="a newly personalised virtual card whose state is not saved")
    run.add_argument("--broker", metavar="URL",
                     help="mqtt://[user@]host[:port] or mqtts://... (password: "
                          "$TAPSIM_MQTT_PASSWORD); without it the validator runs offline")
    run.add_argument("--ca", type=Path, metavar="PEM", help="CA certificate for mqtts://")
    run.add_argument("--deny-list-key", type=Path, action="append", metavar="PEM",
                     help=f"back-office public key that signs the deny list (repeatable; "
                          f"default ${DENY_KEY_ENV}); without one no downlink is applied")
    run.add_argument("--validator-id", default="V0001", metavar="ID",
                     help="this validator's id: its journal's name, its tap ids' prefix and "
                          "its broker user (default %(default)s)")
    run.add_argument("--operator-id", default="OP1", metavar="ID",
                     help="the transit operator written into each tap (default %(default)s)")
    # Defaults from the shipped sample feed `city`, the back office's default: a validator
    # started with no --stop-id/--route-id then has its taps priced, not dead-lettered.
    run.add_argument("--stop-id", default=SAMPLE_STOP, metavar="ID",
                     help="the stop the validator stands at: a stop_id of the back office's "
                          "feed (default %(default)s, of the sample feed city)")
    run.add_argument("--route-id", default=SAMPLE_ROUTE, metavar="ID",
                     help="the route of the bus it rides: a route_id of the back office's "
                          "feed (default %(default)s, of the sample feed city)")
    run.add_argument("--action", choices=ACTIONS, default="tap",
                     help="what a tap means: tap (one tap, flat fare), tap_on (boarding) or "
                          "tap_off (alighting, distance fares) (default %(default)s)")
    run.add_argument("--prefer", choices=("quickpass", "epurse"), default="quickpass",
                     help="first choice of application; epurse: the T-Union e-purse with a TEST "
                          "PSAM kept beside the journal (FILE.psam.json), QuickPass as fallback")
    run.add_argument("--amount", type=amount, default=200, metavar="FEN",
                     help="nominal fare offered to the card (default 200)")
    run.add_argument("--journal", type=Path, metavar="FILE",
                     help="journal file (default $XDG_STATE_HOME/tapsim/validators/ID.journal)")
    run.add_argument("--taps", type=integer(0, MAX_TAPS), metavar="N",
                     help="stop after N taps (default: run on)")
    run.add_argument("--interval", type=number(0, DAY_S, "seconds"), default=0.0, metavar="S",
                     help="seconds between taps (default 0)")
    run.add_argument("--duplicate-window", type=number(0, DAY_S, "seconds"), default=30.0,
                     metavar="S",
                     help="same card again within S seconds is a duplicate (0: off; default 30)")
    run.add_argument("--senior-age", type=integer(0, 150, "years"), default=60, metavar="YEARS",
                     help="age from which the holder rides as senior (default 60)")
    run.add_argument("--drain", type=number(0, DAY_S, "seconds"), default=10.0, metavar="S",
                     help="before exiting, wait up to S seconds until every tap is confirmed by "
                          "the back office (default 10)")
    run.add_argument("--keep-days", type=number(0, 36_500, "days"), default=7.0, metavar="DAYS",
                     help="at start, drop taps the back office confirmed more than DAYS ago "
                          "from the journal (default 7)")
    run.add_argument("--commit-timeout", type=number(0.001, DAY_S, "seconds"), default=10.0,
                     metavar="S",
                     help="send a tap again when the back office has not confirmed it S "
                          "seconds after the broker took it (default 10)")
    run.add_argument("--no-sm", action="store_true", help="a kernel without SM cryptography")
    add_ca_keys_option(run)
    run.add_argument("--json", action="store_true", help="one JSON object per tap")
    run.add_argument("-v", "--verbose", action="store_true", help="log the link to stderr")
    run.set_defaults(func=main)


def default_journal(validator_id: str) -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "tapsim" / "validators" / f"{validator_id}.journal"


def _verifier(paths: list[Path] | None) -> Verifier | None:
    from wire.errors import WireError  # noqa: PLC0415
    from wire.signing import Verifier, key_id_of, load_public_key  # noqa: PLC0415

    if not paths and os.environ.get(DENY_KEY_ENV):
        paths = [Path(os.environ[DENY_KEY_ENV])]
    if not paths:
        return None
    keys = []
    for path in paths:
        try:
            keys.append(load_public_key(path.read_bytes(), str(path)))
        except OSError as exc:
            raise UserError(f"{path}: {exc.strerror}") from None
        except WireError as exc:
            raise UserError(exc.detail) from None
    return Verifier({key_id_of(k): k for k in keys})


def _line(event: TapEvent, as_json: bool) -> str:
    rec = event.record
    data = {
        "tap_id": rec.tap_id if rec else None, "seq": rec.seq if rec else None,
        "outcome": event.verdict.outcome.value if event.verdict else None,
        "reason": event.verdict.reason if event.verdict else None,
        "text": event.display.text, "colour": event.display.colour.value,
        "beep": event.display.beep.value,
        "rider_category": rec.rider_category if rec else None,
        "pan_masked": rec.pan_masked if rec else None,
        "method": rec.method.value if rec else None,
        "atc": rec.atc if rec else None,
        "epurse_balance": rec.epurse_balance_after if rec else None,
        "kernel_ms": round(event.kernel_s * 1e3, 3), "journal_ms": round(event.journal_s * 1e3, 3),
    }
    if as_json:
        return json.dumps(data)
    who = f"{data['pan_masked']} {data['rider_category']}" if rec else "-"
    return f"{data['tap_id'] or '-':<24} {event.display.colour.value.upper():<6} " \
           f"{event.display.text:<26} {who}"


async def _run(args: argparse.Namespace) -> int:
    import contextlib  # noqa: PLC0415
    import logging  # noqa: PLC0415

    from emv.card.card import VirtualCard  # noqa: PLC0415
    from emv.card.image import personalise  # noqa: PLC0415
    from emv.card.profile import ProfileError, load_profile  # noqa: PLC0415
    from emv.kernel import EPURSE_FIRST, QUICKPASS_FIRST, TerminalConfig  # noqa: PLC0415
    from fare.concessions import AgeRule  # noqa: PLC0415
    from tapsim.state import card_state_path, load_card_state, load_psam, save_psam  # noqa: PLC0415
    from terminal.decisions import RiderRules, TapPolicy  # noqa: PLC0415
    from terminal.denylist import DenyList, Downlink  # noqa: PLC0415
    from terminal.denystore import DenyStore, deny_store_path  # noqa: PLC0415
    from terminal.journal import Journal, JournalError  # noqa: PLC0415
    from terminal.readers import ReaderError, open_reader  # noqa: PLC0415
    from terminal.validator import Validator, ValidatorConfig  # noqa: PLC0415
    from wire.errors import WireError  # noqa: PLC0415
    from wire.messages import Action  # noqa: PLC0415

    path = args.journal or default_journal(args.validator_id)
    check_output_file(path, "--journal" if args.journal else "journal")  # and those beside it
    try:
        config = ValidatorConfig(
            validator_id=args.validator_id, operator_id=args.operator_id, stop_id=args.stop_id,
            route_id=args.route_id, action=Action(args.action), amount=args.amount,
            policy=TapPolicy(duplicate_window=dt.timedelta(seconds=args.duplicate_window)),
            rider_rules=RiderRules(age_rules=(AgeRule("senior", args.senior_age),)))
    except (ValueError, WireError) as exc:
        raise UserError(str(exc)) from None
    card = None
    card_state: tuple[CardState, Path] | None = None
    if args.reader.split(":", 1)[0] == "virtual":
        # The card keeps its counters between runs (the same file `tapsim tap` uses), so a
        # restarted validator never offers the back office an ATC it has already seen.
        state_path = None if args.fresh_card else card_state_path(args.card)
        try:
            card = VirtualCard(personalise(load_profile(args.card)), load_card_state(state_path))
        except ProfileError as exc:
            raise UserError(str(exc)) from None
        if state_path is not None:
            card_state = (card.state, state_path)
    try:
        reader = open_reader(args.reader, card)
    except ReaderError as exc:
        raise UserError(str(exc)) from None
    verifier = _verifier(args.deny_list_key)
    settings = None
    if args.broker:  # MQTT (aiomqtt, paho) only for a validator that has a link
        from terminal.uplink import BrokerSettings, validator_client_id  # noqa: PLC0415
        from wire.brokerurl import BrokerUrlError  # noqa: PLC0415

        try:
            settings = BrokerSettings.from_url(args.broker, validator_client_id(args.validator_id),
                                               tls_ca=args.ca)
        except BrokerUrlError as exc:
            raise UserError(str(exc)) from None
        check_broker_tls(settings, args.ca)
    try:
        journal = Journal(path)
    except JournalError as exc:
        raise UserError(str(exc)) from None
    log = logging.getLogger("tapsim.terminal")
    if settings is not None and verifier is None:
        log.warning("no deny-list key: downlink messages will not be applied")
    with contextlib.ExitStack() as stack:
        stack.callback(journal.close)
        journal.prune(dt.datetime.now(dt.UTC) - dt.timedelta(days=args.keep_days))
        try:
            deny_store = DenyStore(deny_store_path(path))
        except JournalError as exc:
            raise UserError(str(exc)) from None
        stack.callback(deny_store.close)
        downlink = None
        if verifier is not None:
            downlink = Downlink(verifier, deny_store)
            deny_list = downlink.deny_list
        else:
            deny_list = DenyList(*deny_store.load_deny_list())
        uplink = None
        if settings is not None:
            from terminal.uplink import Uplink  # noqa: PLC0415

            up_store = Journal(path, lock=False, durable=False)
            stack.callback(up_store.close)
            uplink = Uplink(settings, up_store, args.validator_id, downlink,
                            commit_timeout=args.commit_timeout)
        psam_file = path.with_name(path.name + ".psam.json")
        psam = load_psam(psam_file) if args.prefer == "epurse" else None
        validator = Validator(
            config, TerminalConfig(ca_keys=resolve_ca_keys(args.ca_keys), token_key=token_key(),
                                   sm_supported=not args.no_sm,
                                   aid_priority=EPURSE_FIRST if psam else QUICKPASS_FIRST),
            journal, deny_list,
            fare_version=(lambda: downlink.fare_version) if downlink else (lambda: 0),
            on_journaled=(lambda _r: uplink.notify()) if uplink else None,
            before_journal=_counters_saver(card_state, psam, psam_file), psam=psam)
        if psam is not None:
            stack.callback(save_psam, psam, psam_file)
        return await _loop(args, validator, reader, uplink)


SIGNAL_DRAIN = 1.0  # seconds a signalled validator spends sending what it can (stop < 2 s)


def _counters_saver(card_state: tuple[CardState, Path] | None, psam: Psam | None,
                    psam_file: Path) -> Callable[[], None] | None:
    """Saves the virtual card's counters and the PSAM's serial after each card session,
    before the tap is journaled or shown (a kill -9 then never repeats an ATC or serial)."""
    if card_state is None and psam is None:
        return None
    from tapsim.state import save_card_state, save_psam  # noqa: PLC0415

    def save() -> None:
        if card_state is not None:
            save_card_state(*card_state)
        if psam is not None:
            save_psam(psam, psam_file)

    return save


async def _loop(args: argparse.Namespace, validator: Validator, reader: Reader,
                uplink: Uplink | None) -> int:
    import asyncio  # noqa: PLC0415
    import contextlib  # noqa: PLC0415
    import signal  # noqa: PLC0415
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    from wire.aio import bounded, wait_event  # noqa: PLC0415

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()  # no more taps (a signal, or --taps reached)
    signalled = asyncio.Event()
    link_stop = asyncio.Event()  # the uplink ends (after its drain)

    def on_signal() -> None:
        signalled.set()
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    link = asyncio.create_task(uplink.run(link_stop)) if uplink else None
    executor = ThreadPoolExecutor(1, thread_name_prefix="tap")  # the journal's one thread
    taps = 0
    try:
        while not stop.is_set() and (args.taps is None or taps < args.taps):
            event = await loop.run_in_executor(executor, validator.tap, reader)
            if event.result is None:  # no card in the field: poll again shortly
                await wait_event(stop, 0.1)
                continue
            taps += 1
            print(_line(event, args.json), flush=True)
            if args.interval > 0:
                await wait_event(stop, args.interval)
        if uplink is not None and args.drain > 0:
            # Told to stop: what can be sent in a second goes; the rest stays journaled.
            drain = asyncio.create_task(
                uplink.confirm(SIGNAL_DRAIN if signalled.is_set() else args.drain))
            told = asyncio.create_task(signalled.wait())
            await asyncio.wait([drain, told], return_when=asyncio.FIRST_COMPLETED)
            if not drain.done():  # a signal during a long drain: one more second at most
                await asyncio.wait({drain}, timeout=SIGNAL_DRAIN)
            drain.cancel()
            told.cancel()
            left = uplink.outstanding()
            if left:
                what = "confirmed by the back office" if uplink.commit_acks else "sent"
                print(f"tapsim: {left} tap(s) not yet {what}; they stay in the journal and go "
                      "out again on the next run", file=sys.stderr)
    finally:
        stop.set()
        link_stop.set()
        if link is not None:
            # A disconnect the broker does not answer is not waited for: the journal keeps
            # whatever was not acknowledged.
            with contextlib.suppress(TimeoutError):
                await bounded(link, 0.5)
        executor.shutdown()
        reader.close()
    return 0


def main(args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415
    import logging  # noqa: PLC0415

    if args.verbose:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(name)s %(message)s")
    return asyncio.run(_run(args))
