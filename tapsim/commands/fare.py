"""`tapsim fare price`: price a taps CSV against a GTFS-Fares v2 feed (a path or a sample name)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fare.currency import format_minor
from fare.engine import price
from fare.errors import FeedError
from fare.explain import Charge
from fare.gtfs import load_feed
from fare.model import Feed
from fare.samples import sample_feed_path, sample_names
from fare.tapfile import TapFileError, parse_taps
from tapsim.errors import Interrupted, UserError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fare = subparsers.add_parser("fare", help="fare engine (GTFS-Fares v2)")
    fare_sub = fare.add_subparsers(dest="fare_command", metavar="ACTION")
    fare_sub.required = True
    p = fare_sub.add_parser(
        "price", help="price a taps CSV",
        description="Price the taps of a CSV file and explain every charge. Amounts are in "
                    "minor units of the feed's currency (fen for CNY).")
    p.add_argument("--feed", required=True,
                   help=f"GTFS folder or zip, or a sample name ({', '.join(sample_names())})")
    p.add_argument("--taps", required=True,
                   help="CSV with tap_id,card,time,stop_id,route_id,action[,rider_category,"
                        "fare_media]; '-' reads standard input")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--on-bad-row", choices=("skip", "reject"), default="skip",
                   help="a bad row is reported on stderr and skipped (default) or rejects the "
                        "whole file (exit 2, nothing priced)")
    p.set_defaults(func=run_price)


def open_feed(spec: str) -> Feed:
    """A feed from a path, or from a sample name when no such path exists."""
    path = Path(spec)
    if not path.exists() and spec in sample_names():
        path = sample_feed_path(spec)
    elif not path.exists():
        raise UserError(f"no feed at {spec!r} (a GTFS folder or zip, or a sample: "
                        f"{', '.join(sample_names())})")
    try:
        return load_feed(path)
    except FeedError as exc:
        lines = "\n".join(str(p) for p in exc.problems)
        raise UserError(f"the fare feed {spec} has {len(exc.problems)} problem(s):\n{lines}") \
            from None


def read_taps_text(spec: str) -> tuple[str, str]:
    """(text, name for messages) of a taps file given as a path or ``-`` for stdin."""
    name = "<stdin>" if spec == "-" else spec
    try:
        return (sys.stdin.read() if spec == "-" else Path(spec).read_text("utf-8")), name
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read taps file {name}: {exc}") from None


def run_price(args: argparse.Namespace) -> int:
    feed = open_feed(args.feed)
    text, name = read_taps_text(args.taps)
    try:
        taps, problems = parse_taps(text, feed)
    except TapFileError as exc:
        raise UserError(f"{name}: {exc}") from None
    for problem in problems:
        print(f"{name}:{problem}", file=sys.stderr)
    if problems:
        if args.on_bad_row == "reject":
            raise UserError(f"{len(problems)} bad row(s) in {name}: nothing priced "
                            "(--on-bad-row reject)")
        print(f"tapsim: skipped {len(problems)} bad row(s) of {name} "
              "(--on-bad-row reject to refuse the file)", file=sys.stderr)
    try:
        charges = price(feed, taps)
    except KeyboardInterrupt as exc:
        raise Interrupted.of(exc, f"while pricing {len(taps):,} taps, nothing printed") \
            from None
    totals: dict[str, int] = {}
    for c in charges:
        totals[c.card] = totals.get(c.card, 0) + c.amount
    if args.json:
        json.dump({"charges": [c.as_dict() for c in charges], "totals": totals}, sys.stdout,
                  ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
        return 0
    _table(feed, charges, totals)
    return 0


def _table(feed: Feed, charges: list[Charge], totals: dict[str, int]) -> None:
    """One line per charge, its explanation wrapped beneath it: readable at 80 columns."""
    import textwrap  # noqa: PLC0415

    from rich.console import Console  # noqa: PLC0415 - only the table output needs rich
    from rich.markup import escape  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    cur = feed.currency
    console = Console(highlight=False)
    tz = feed.timezone
    width = max(console.width - 6, 40)
    console.print(f"[bold]Charges ({cur})[/]")
    card_w = max((len(c.card) for c in charges), default=4)
    tap_w = max((len(c.tap_id) for c in charges), default=3)
    for c in charges:
        when = c.time.astimezone(tz).strftime("%Y-%m-%d %H:%M")
        shown = format_minor(c.amount, cur)
        style = "green" if c.amount < 0 else "bold"
        console.print(f"{when}  {escape(c.card):<{card_w}}  {escape(c.tap_id):<{tap_w}}  "
                      f"{c.kind!s:<14} [{style}]{shown:>9}[/]")
        for line in textwrap.wrap(c.explain, width):
            console.print(f"    [dim]{escape(line)}[/]")
    summary = Table(title="Totals per card")
    summary.add_column("card")
    summary.add_column(f"total ({cur})", justify="right")
    for card, total in sorted(totals.items()):
        summary.add_row(card, format_minor(total, cur))
    console.print(summary)
