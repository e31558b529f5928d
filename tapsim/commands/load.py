"""`tapsim load iso8583`: open-loop transit authorizations against any host of the dialect.

The requests (0100 account verifications with real ARQCs from virtual cards) are built
before the clock starts; latencies are measured from each request's scheduled send time,
so a host that queues shows it (no coordinated omission; isolink/README.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import Any

from tapsim.checks import integer, number
from tapsim.commands.issuer import add_spec_argument, load_spec, parse_listen
from tapsim.errors import Interrupted, UserError

ARRIVALS = ("poisson", "fixed")  # isolink.load.ARRIVALS, written out for the parser
DEFAULT_CARD = "sscard3"


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
