"""`tapsim load iso8583` and `tapsim load validators`: open-loop load generators.

`iso8583`: transit authorizations (0100 account verifications with real ARQCs from virtual
cards) against any host of the dialect (isolink/README.md).  `validators`: N simulated
validators (real journals and uplinks) through a broker to a running back office, tap to
commit acknowledgement (terminal/README.md).  Both build their traffic before the clock
starts and measure latency from each scheduled time, so a host that queues shows it (no
coordinated omission).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tapsim.cakeys import add_ca_keys_option
from tapsim.checks import integer, number
from tapsim.commands.issuer import add_spec_argument, load_spec, parse_listen
from tapsim.errors import Interrupted, UserError

ARRIVALS = ("poisson", "fixed")  # isolink.load.ARRIVALS, written out for the parser
DEFAULT_CARD = "sscard3"
DEFAULT_FLEET_CARD = "unionpay-debit"  # an adult's debit card: every tap is charged


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("load", help="load generators for the hosts tapsim talks to")
    cs = p.add_subparsers(dest="load_command", metavar="TARGET")
    cs.required = True
    iso = cs.add_parser(
        "iso8583", help="open-loop ISO 8583 authorizations against a host (e.g. tapsim issuer run)",
        description="Sends 0100 account verifications (amount 0, real ARQCs from virtual "
                    "cards) at --rate for --duration, open loop: send times are fixed in "
                    "advance and latency is measured from the scheduled time, so a slow host "
                    "shows its queueing (no coordinated omission). Reports throughput, latency "
                    "p50/p95/p99/max per second and overall, timeouts and response codes. "
                    "The cards must be issued (and activated) at the host, with the same "
                    "TAPSIM_TOKEN_KEY.")
    iso.add_argument("--target", metavar="HOST:PORT", help="the host to load (required)")
    add_spec_argument(iso)
    iso.add_argument("--rate", type=number(0.1, 100_000, "requests/s"),
                     metavar="R", help="mean requests per second, 0.1-100000 (required)")
    iso.add_argument("--duration", type=number(0.1, 3600, "s"), metavar="S",
                     help="seconds of schedule, 0.1-3600 (required)")
    iso.add_argument("--arrivals", choices=ARRIVALS, default="poisson",
                     help="poisson (exponential gaps, default) or fixed (even spacing)")
    iso.add_argument("--connections", type=integer(1, 256, "connections"), default=4,
                     metavar="N", help="TCP connections, requests spread round-robin (default 4)")
    iso.add_argument("--timeout", type=number(0.01, 600, "s"), default=5.0, metavar="S",
                     help="seconds after its scheduled time a request counts as timed out "
                          "(default 5)")
    iso.add_argument("--card", action="append", default=None, metavar="NAME|PATH",
                     help=f"a card profile to tap (repeatable; default {DEFAULT_CARD}); taps go "
                          "round-robin over the cards")
    iso.add_argument("--cards", type=integer(1, 9999, "cards"), default=1, metavar="N",
                     help="cards per profile (default 1: the profile's own PAN; more: other "
                          "TEST PANs of it, see --list-pans)")
    iso.add_argument("--list-pans", action="store_true",
                     help="print 'PROFILE PAN' for every card of the run (to issue them at "
                          "the host) and exit")
    iso.add_argument("--atc-from", type=integer(0, 0xFFFE), default=0, metavar="N",
                     help="the cards' ATC before the run (default 0, fresh cards); a second run "
                          "against the same host needs a higher one, or the issuer sees replays")
    iso.add_argument("--seed", type=integer(0, 2**63 - 1), default=1, metavar="N",
                     help="seed of the arrival times and unpredictable numbers (default 1)")
    iso.add_argument("--json", action="store_true", help="print the report as one JSON object")
    iso.set_defaults(func=iso_main)
    register_validators(cs)


def register_validators(cs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    v = cs.add_parser(
        "validators", help="N simulated validators through a broker to a running back office",
        description="Runs N validators in one process, each with its own durable journal, its "
                    "own MQTT uplink (the real terminal code: QoS 1, end-to-end commit "
                    "acknowledgements, resends) and its own broker user, tapping virtual cards "
                    "(taps built with the real kernel before the clock starts) at --rate for "
                    "--duration, open loop (Poisson arrivals). Reports tap-to-commit latency "
                    "(from each tap's due time to the back office's acknowledgement) "
                    "p50/p95/p99/max per second and overall, commits and backlog per second, "
                    "resends and link errors. The back office (`tapsim backoffice run`) must "
                    "be running on the same broker, the cards issued and activated in its "
                    "database (--list-pans), with the same TAPSIM_TOKEN_KEY.")
    v.add_argument("--broker", metavar="URL",
                   help="mqtt://host[:port] or mqtts://... (required); validators connect as "
                        "their own users with --credentials, else anonymously")
    v.add_argument("--ca", type=Path, metavar="PEM", help="CA certificate for mqtts://")
    v.add_argument("--credentials", type=Path, metavar="DIR",
                   help="the credentials/ folder `tapsim broker config` wrote: each "
                        "validator's password is read from DIR/<its id>")
    v.add_argument("--validators", type=integer(1, 9999, "validators"), metavar="N",
                   help="validators in the fleet, 1-9999 (required)")
    v.add_argument("--id-prefix", default="load-", metavar="TEXT",
                   help="validator ids are TEXT0001 ... TEXTnnnn (default %(default)s: "
                        "load-0001 ...), also their broker users")
    v.add_argument("--rate", type=number(0.1, 100_000, "taps/s"), metavar="R",
                   help="mean taps per second of the whole fleet, 0.1-100000 (required)")
    v.add_argument("--duration", type=number(0.1, 3600, "s"), metavar="S",
                   help="seconds of schedule, 0.1-3600 (required)")
    v.add_argument("--arrivals", choices=ARRIVALS, default="poisson",
                   help="poisson (exponential gaps, default) or fixed (even spacing)")
    v.add_argument("--card", action="append", default=None, metavar="NAME|PATH",
                   help=f"a card profile to tap (repeatable; default {DEFAULT_FLEET_CARD}); "
                        "taps go round-robin over the cards")
    v.add_argument("--cards", type=integer(1, 9999, "cards"), default=1, metavar="N",
                   help="cards per profile (default 1: the profile's own PAN; more: other "
                        "TEST PANs of it, see --list-pans)")
    v.add_argument("--list-pans", action="store_true",
                   help="print 'PROFILE PAN' for every card of the run (to issue them at the "
                        "back office with `tapsim card issue --pan`) and exit")
    v.add_argument("--atc-from", type=integer(0, 0xFFFE), default=0, metavar="N",
                   help="the cards' ATC before the run (default 0, fresh cards); a second run "
                        "against the same database needs a higher one, or the back office "
                        "refuses the taps as replayed")
    v.add_argument("--stop-id", default="S01", metavar="ID",
                   help="the validators' stop, a stop_id of the back office's feed "
                        "(default %(default)s, of the sample feed city)")
    v.add_argument("--route-id", default="1", metavar="ID",
                   help="their route, a route_id of the feed (default %(default)s)")
    v.add_argument("--journal-dir", type=Path, metavar="DIR",
                   help="keep the journals in DIR (default: a temporary folder, removed "
                        "after the run)")
    v.add_argument("--drain", type=number(0, 3600, "s"), default=30.0, metavar="S",
                   help="after the schedule, wait up to S seconds for the last "
                        "acknowledgements (default 30)")
    v.add_argument("--ack-timeout", type=number(0.1, 3600, "s"), default=10.0, metavar="S",
                   help="stop with an error when no tap is acknowledged S seconds after the "
                        "first was journaled (default 10)")
    v.add_argument("--commit-timeout", type=number(0.001, 86_400, "s"), default=10.0,
                   metavar="S",
                   help="a validator sends a tap again when the back office has not "
                        "confirmed it S seconds after the broker took it (default 10)")
    v.add_argument("--no-fsync", action="store_true",
                   help="journal without an fsync per tap (validators always sync): less "
                        "work for the generator when it, not the back office, is the limit")
    v.add_argument("--seed", type=integer(0, 2**63 - 1), default=1, metavar="N",
                   help="seed of the arrival times (default 1)")
    add_ca_keys_option(v)
    v.add_argument("--json", action="store_true", help="print the report as one JSON object")
    v.add_argument("-v", "--verbose", action="store_true",
                   help="log the validators' links to stderr (default: errors only; link "
                        "errors are in the report)")
    v.set_defaults(func=validators_main)


def iso_main(args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415

    from emv.card.profile import ProfileError, load_profile  # noqa: PLC0415
    from emv.pan import pan_token  # noqa: PLC0415
    from isolink.taps import CardTapper, TapError, profile_cards  # noqa: PLC0415
    from tapsim.commands.tap import token_key  # noqa: PLC0415

    try:
        named = [(name, load_profile(name)) for name in (args.card or [DEFAULT_CARD])]
        cards = [(name, card) for name, p in named for card in profile_cards(p, args.cards)]
        if args.list_pans:
            for name, card in cards:
                print(f"{name} {card.pan}")
            return 0
        tappers = [CardTapper(card, atc_from=args.atc_from) for _, card in cards]
    except (ProfileError, TapError) as exc:
        raise UserError(f"--card: {exc}") from None
    for option in ("target", "rate", "duration"):
        if getattr(args, option) is None:
            raise UserError(f"--{option} is required (unless --list-pans)")
    from isolink.load import LoadError, LoadSettings, plan, run_load  # noqa: PLC0415

    host, port = parse_listen(args.target, "--target")
    if port == 0:
        raise UserError("--target: port 0 is not a host's port")
    dialect = load_spec(args.spec)
    key = token_key()
    profiles = [card for _, card in cards]
    settings = LoadSettings(host=host, port=port, rate=args.rate, duration=args.duration,
                            arrivals=args.arrivals, connections=args.connections,
                            timeout=args.timeout, seed=args.seed)
    tty = sys.stderr.isatty()
    try:
        print(f"load: preparing {args.rate * args.duration:.0f} request(s) on "
              f"{len(tappers)} card(s)", file=sys.stderr, flush=True)
        planned = plan(dialect, tappers, [pan_token(p.pan, key) for p in profiles], settings)

        def progress(p: dict[str, Any]) -> None:
            p99 = "-" if p["p99_ms"] is None else f"{p['p99_ms']:.1f} ms"
            line = (f"load: {p['elapsed_s']:.0f}/{p['duration_s']:.0f} s  sent {p['sent']}  "
                    f"answered {p['answered']}  p99 {p99}")
            print(("\r" + line.ljust(78)) if tty else line, end="" if tty else "\n",
                  file=sys.stderr, flush=True)

        out = asyncio.run(run_load(dialect, settings, planned, progress))
    except LoadError as exc:
        raise UserError(str(exc)) from None
    except KeyboardInterrupt as exc:
        raise Interrupted.of(exc, "load run stopped; no report") from None
    if tty:
        print(file=sys.stderr)
    if args.json:
        print(json.dumps(out))
        return 0
    print_report(out, dialect.host_codes)
    return 0


def print_report(r: dict[str, Any], host_codes: Mapping[str, str] | None = None) -> None:
    from issuer.codes import DESCRIPTIONS, ResponseCode  # noqa: PLC0415

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    lat = r["latency_ms"]
    print(f"{r['target']} ({r['dialect']}): {r['arrivals']} arrivals at {r['rate_per_s']}/s "
          f"for {r['duration_s']} s on {r['connections']} connection(s)")
    print(f"scheduled {r['scheduled']}, answered {r['answered']}, timeouts {r['timeouts']} "
          f"(late {r['late']}), throughput {r['throughput_per_s']}/s")
    print(f"latency ms from scheduled send: p50 {ms(lat['p50'])}  p95 {ms(lat['p95'])}  "
          f"p99 {ms(lat['p99'])}  max {ms(lat['max'])}  (generator lag max "
          f"{r['send_lag_ms']:.1f} ms, CPU {r['generator_cpu_s']:.2f} s of "
          f"{r['generator_wall_s']:.2f} s)")
    print(f"{'second':>6} {'sched':>6} {'answ':>6} {'t/o':>5} {'p50':>8} {'p95':>8} "
          f"{'p99':>8} {'max':>8}")
    for b in r["per_second"]:
        print(f"{b['second']:>6} {b['scheduled']:>6} {b['answered']:>6} {b['timeouts']:>5} "
              f"{ms(b['p50']):>8} {ms(b['p95']):>8} {ms(b['p99']):>8} {ms(b['max']):>8}")
    print(f"{'code':<5} {'count':>8}  meaning")
    for code, n in r["codes"].items():
        try:
            meaning = DESCRIPTIONS[ResponseCode(code)]
        except ValueError:
            meaning = (host_codes or {}).get(code, "")
        print(f"{code:<5} {n:>8}  {meaning}")
    if r["connection_errors"]:
        print(f"connection errors: {'; '.join(r['connection_errors'])}")


def _fleet_cards(args: argparse.Namespace) -> list[tuple[str, Any]]:
    from emv.card.profile import ProfileError, load_profile  # noqa: PLC0415
    from isolink.taps import TapError, profile_cards  # noqa: PLC0415

    try:
        named = [(name, load_profile(name)) for name in (args.card or [DEFAULT_FLEET_CARD])]
        return [(name, card) for name, p in named for card in profile_cards(p, args.cards)]
    except (ProfileError, TapError) as exc:
        raise UserError(f"--card: {exc}") from None


def _passwords(directory: Path | None, ids: list[str]) -> dict[str, str] | None:
    """Each validator's password from the folder `tapsim broker config` wrote."""
    if directory is None:
        return None
    if not directory.is_dir():
        raise UserError(f"--credentials {directory}: not a folder (the credentials/ folder "
                        "`tapsim broker config --out DIR` wrote)")
    out: dict[str, str] = {}
    for vid in ids:
        path = directory / vid
        try:
            out[vid] = path.read_text().strip()
        except FileNotFoundError:
            raise UserError(f"--credentials {directory}: no password file for validator {vid} "
                            f"(`tapsim broker config --validators {ids[0]},...` makes one per "
                            "validator)") from None
        except OSError as exc:
            raise UserError(f"--credentials {path}: {exc.strerror}") from None
    return out


def validators_main(args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415
    import logging  # noqa: PLC0415
    import signal  # noqa: PLC0415

    from emv.kernel import QUICKPASS_FIRST, TerminalConfig  # noqa: PLC0415
    from tapsim.cakeys import resolve_ca_keys  # noqa: PLC0415
    from tapsim.checks import check_broker_tls  # noqa: PLC0415
    from tapsim.commands.tap import token_key  # noqa: PLC0415
    from terminal.fleet_load import (  # noqa: PLC0415
        FleetLoadError,
        FleetSettings,
        prepare,
        run_fleet,
    )
    from wire.brokerurl import BrokerUrl, BrokerUrlError  # noqa: PLC0415

    cards = _fleet_cards(args)
    if args.list_pans:
        for name, card in cards:
            print(f"{name} {card.pan}")
        return 0
    # N uplinks retrying a refused connection would say so N times a second: the run says it
    # once, in its error or its report.
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(message)s")
    if not args.verbose:
        logging.getLogger("tapsim.terminal").setLevel(logging.CRITICAL)
    for option in ("broker", "validators", "rate", "duration"):
        if getattr(args, option) is None:
            raise UserError(f"--{option} is required (unless --list-pans)")
    try:
        broker = BrokerUrl.parse(args.broker, tls_ca=args.ca)
    except BrokerUrlError as exc:
        raise UserError(f"--broker: {exc}") from None
    if broker.username is not None:
        raise UserError("--broker names a user: each validator connects as its own user, "
                        "with its password from --credentials DIR")
    check_broker_tls(broker, args.ca)
    if args.journal_dir is not None and args.journal_dir.exists() \
            and not args.journal_dir.is_dir():
        raise UserError(f"--journal-dir {args.journal_dir}: not a folder")
    ids = [f"{args.id_prefix}{i:04d}" for i in range(1, args.validators + 1)]
    try:
        settings = FleetSettings(
            broker=broker, validators=args.validators, rate=args.rate, duration=args.duration,
            arrivals=args.arrivals, seed=args.seed, id_prefix=args.id_prefix,
            passwords=_passwords(args.credentials, ids), journal_dir=args.journal_dir,
            drain=args.drain, ack_timeout=args.ack_timeout, commit_timeout=args.commit_timeout,
            atc_from=args.atc_from, stop_id=args.stop_id, route_id=args.route_id,
            journal_fsync=not args.no_fsync)
    except FleetLoadError as exc:
        raise UserError(f"--id-prefix: {exc}" if "prefix" in str(exc) else str(exc)) from None
    terminal = TerminalConfig(ca_keys=resolve_ca_keys(args.ca_keys), token_key=token_key(),
                              aid_priority=QUICKPASS_FIRST)
    tty = sys.stderr.isatty()

    def say(line: str, final: bool = True) -> None:
        print(("\r" + line.ljust(78)) if tty else line, end="\n" if final or not tty else "",
              file=sys.stderr, flush=True)

    def progress(p: dict[str, Any]) -> None:
        p99 = "-" if p["p99_ms"] is None else f"{p['p99_ms']:.1f} ms"
        say(f"load: {p['elapsed_s']:.0f}/{p['duration_s']:.0f} s  journaled {p['journaled']}  "
            f"committed {p['committed']}  backlog {p['backlog']}  p99 {p99}", final=False)

    signalled: list[int] = []

    async def go() -> dict[str, Any] | None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal(signum: int) -> None:
            signalled.append(signum)
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, int(sig))

        def make() -> Any:
            say(f"load: {args.validators} validator(s) connected; preparing "
                f"{args.rate * args.duration:.0f} tap(s) of {len(cards)} card(s) with the kernel")
            return prepare(settings, terminal, [c for _, c in cards], cancelled=stop.is_set,
                           progress=lambda done, total: say(
                               f"load: prepared {done}/{total} taps", final=False))

        return await run_fleet(settings, make, stop, progress)

    try:
        out = asyncio.run(go())
    except FleetLoadError as exc:
        if tty:
            print(file=sys.stderr)
        raise UserError(str(exc)) from None
    if tty:
        print(file=sys.stderr)
    if out is None:
        print("tapsim: interrupted before the first tap; no report", file=sys.stderr)
        return 128 + (signalled[0] if signalled else signal.SIGINT)
    if args.json:
        print(json.dumps(out))
    else:
        print_fleet_report(out)
    if out["interrupted"]:
        print(f"tapsim: interrupted: {out['due']} of {out['scheduled']} taps were due, "
              f"{out['committed']} committed", file=sys.stderr)
        return 128 + (signalled[0] if signalled else signal.SIGINT)
    return 0


def print_fleet_report(r: dict[str, Any]) -> None:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    lat, lag, up = r["latency_ms"], r["journal_lag_ms"], r["uplink"]
    print(f"{r['broker']}: {r['validators']} validator(s), {r['cards']} card(s), "
          f"{r['arrivals']} arrivals at {r['rate_per_s']}/s for {r['duration_s']} s"
          f"{' (interrupted)' if r['interrupted'] else ''}")
    print(f"scheduled {r['scheduled']}, journaled {r['journaled']}, committed {r['committed']}, "
          f"uncommitted {r['uncommitted']}, throughput {r['throughput_per_s']}/s, "
          f"backlog max {r['backlog_max']}, drain {r['drain_s']} s")
    print(f"tap to commit ms from due time: p50 {ms(lat['p50'])}  p95 {ms(lat['p95'])}  "
          f"p99 {ms(lat['p99'])}  max {ms(lat['max'])}  (journal lag p99 {ms(lag['p99'])}, "
          f"max {ms(lag['max'])}; generator CPU {r['generator_cpu_s']:.2f} s of "
          f"{r['generator_wall_s']:.2f} s)")
    print(f"{'second':>6} {'sched':>6} {'commit':>6} {'backlog':>7} {'p50':>8} {'p95':>8} "
          f"{'p99':>8} {'max':>8}")
    for b in r["per_second"]:
        backlog = "-" if b["backlog"] is None else b["backlog"]
        print(f"{b['second']:>6} {b['scheduled']:>6} {b['committed']:>6} {backlog:>7} "
              f"{ms(b['p50']):>8} {ms(b['p95']):>8} {ms(b['p99']):>8} {ms(b['max']):>8}")
    print(f"uplinks: {up['connects']} connect(s), {up['disconnects']} disconnect(s), "
          f"{up['published']} published, {up['resent']} resent")
    for e in [*up["errors"], *r["journal_errors"]]:
        print(f"error: {e}")
