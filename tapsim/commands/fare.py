"""`tapsim fare price`: price a taps CSV against a GTFS-Fares v2 feed (a path or a sample name)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tapsim.errors import Interrupted, UserError

if TYPE_CHECKING:
    from fare.explain import Charge
    from fare.model import Feed

# fare.samples.sample_names(), written out so that the parser needs no fare module
SAMPLE_FEEDS = ("city", "city2026", "harbour")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fare = subparsers.add_parser("fare", help="fare engine (GTFS-Fares v2)")
    fare_sub = fare.add_subparsers(dest="fare_command", metavar="ACTION")
    fare_sub.required = True
    p = fare_sub.add_parser(
        "price", help="price a taps CSV",
        description="Price the taps of a CSV file and explain every charge. Amounts are in "
                    "minor units of each charge's currency (fen for CNY); totals are per card "
                    "and currency.")
    p.add_argument("--feed", required=True,
                   help=f"GTFS folder or zip, or a sample name ({', '.join(SAMPLE_FEEDS)})")
    p.add_argument("--taps", required=True,
                   help="CSV with tap_id,card,time,stop_id,route_id,action[,rider_category,"
                        "fare_media]; '-' reads standard input")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table",
                   help="table (default, for people), json (schema in fare/README.md) or csv "
                        "(one row per charge)")
    p.add_argument("--json", dest="format", action="store_const", const="json",
                   help="same as --format json")
    p.add_argument("--on-bad-row", choices=("skip", "reject"), default="skip",
                   help="a bad row is reported on stderr and skipped (default) or rejects the "
                        "whole file (exit 2, nothing priced)")
    p.set_defaults(func=run_price)
    c = fare_sub.add_parser(
        "check", help="check a fare feed: every error and warning at once",
        description="Validate a GTFS-Fares v2 feed (and tapsim's fare_caps.txt) on its own. "
                    "Exit 0: clean; 1: warnings only; 2: errors (the feed does not load).")
    c.add_argument("feed", metavar="FEED",
                   help=f"GTFS folder or zip, or a sample name ({', '.join(SAMPLE_FEEDS)})")
    c.add_argument("--json", action="store_true",
                   help="print a JSON document (schema tapsim.fare.check, version 1)")
    c.set_defaults(func=run_check)
    m = fare_sub.add_parser(
        "compare", help="price the same taps under two feeds: what a fare change does",
        description="Price a taps CSV under feed A (the fares in force) and feed B (the "
                    "change) and report revenue by rider category, fare media, route, hour and "
                    "day, riders paying more/less/the same, and the journeys whose price "
                    "changes most.")
    m.add_argument("--feed", action="append", default=[], metavar="FEED",
                   help="give twice: A then B (GTFS folder or zip, or a sample name: "
                        f"{', '.join(SAMPLE_FEEDS)})")
    m.add_argument("--taps", required=True,
                   help="taps CSV (the `fare price` format); '-' reads standard input")
    m.add_argument("--format", choices=("table", "json"), default="table",
                   help="what to print: text tables (default) or the JSON document "
                        "(schema tapsim.fare.compare, version 1)")
    m.add_argument("--out", metavar="DIR",
                   help="also write DIR/compare.json and DIR/compare.html with its plots")
    m.add_argument("--top", type=int, default=10,
                   help="how many of the most changed journeys to list (default 10)")
    m.add_argument("--on-bad-row", choices=("skip", "reject"), default="skip",
                   help="a bad row (in either feed) is reported and skipped, or rejects the "
                        "file (exit 2)")
    m.set_defaults(func=run_compare)


def open_feed(spec: str) -> Feed:
    """A feed from a path, or from a sample name when no such path exists."""
    from fare.errors import FeedError  # noqa: PLC0415
    from fare.gtfs import load_feed  # noqa: PLC0415
    from fare.samples import sample_feed_path, sample_names  # noqa: PLC0415

    path = Path(spec)
    if not path.exists() and spec in sample_names():
        path = sample_feed_path(spec)
    elif not path.exists():
        raise UserError(f"no feed at {spec!r} (a GTFS folder or zip, or a sample: "
                        f"{', '.join(SAMPLE_FEEDS)})")
    try:
        return load_feed(path)
    except FeedError as exc:
        lines = "\n".join(str(p) for p in exc.problems)
        raise UserError(f"the fare feed {spec} has {len(exc.problems)} problem(s):\n{lines}") \
            from None


def run_check(args: argparse.Namespace) -> int:
    from fare.check import as_json, check_files  # noqa: PLC0415 - lazy, as every command
    from fare.errors import FeedError  # noqa: PLC0415
    from fare.gtfs import read_files  # noqa: PLC0415
    from fare.samples import sample_feed_path, sample_names  # noqa: PLC0415

    path = Path(args.feed)
    if not path.exists() and args.feed in sample_names():
        path = sample_feed_path(args.feed)
    try:
        files = read_files(path)
    except FeedError as exc:  # not a feed at all: no folder, not a zip, not UTF-8
        from fare.check import CheckReport  # noqa: PLC0415

        report = CheckReport(list(exc.problems), [])
    else:
        report = check_files(files, name=path.name)
    if args.json:
        json.dump(as_json(report, args.feed), sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    else:
        for p in report.errors:
            print(f"error: {p}")
        for p in report.warnings:
            print(f"warning: {p}")
        print(f"{args.feed}: {len(report.errors)} error(s), {len(report.warnings)} warning(s)")
    return report.exit_code


def run_compare(args: argparse.Namespace) -> int:
    from fare.compare import CompareError, compare  # noqa: PLC0415 - lazy, as every command
    from fare.compare_html import pages, text_report  # noqa: PLC0415
    from fare.tapfile import TapFileError, parse_taps  # noqa: PLC0415

    if len(args.feed) != 2:
        raise UserError("fare compare needs two --feed options: the fares in force (A), then "
                        "the change (B)")
    feed_a, feed_b = open_feed(args.feed[0]), open_feed(args.feed[1])
    text, name = read_taps_text(args.taps)
    try:  # read once, each row checked against both feeds: both price the same taps
        taps, problems = parse_taps(text, feed_a, feed_b)
    except TapFileError as exc:
        raise UserError(f"{name}:{exc}") from None
    for p in problems:
        print(f"{name}:{p}", file=sys.stderr)
    if problems and args.on_bad_row == "reject":
        raise UserError(f"{len(problems)} bad row(s) in {name}: nothing compared "
                        "(--on-bad-row reject)")
    try:
        doc = compare(feed_a, feed_b, taps, top=args.top)
    except CompareError as exc:
        raise UserError(str(exc)) from None
    doc["feeds"] = {"a": args.feed[0], "b": args.feed[1]}
    if args.out:
        out = Path(args.out)
        try:
            out.mkdir(parents=True, exist_ok=True)
            (out / "compare.json").write_text(json.dumps(doc, ensure_ascii=False, indent=2),
                                              "utf-8")
            for fname, data in pages(doc).items():
                (out / fname).write_bytes(data)
        except OSError as exc:
            raise UserError(f"cannot write the report to {out}: {exc}") from None
    if args.format == "json":
        json.dump(doc, sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(text_report(doc))
    return 0


def read_taps_text(spec: str) -> tuple[str, str]:
    """(text, name for messages) of a taps file given as a path or ``-`` for stdin."""
    name = "<stdin>" if spec == "-" else spec
    try:
        return (sys.stdin.read() if spec == "-" else Path(spec).read_text("utf-8")), name
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read taps file {name}: {exc}") from None


def run_price(args: argparse.Namespace) -> int:
    from fare.engine import price  # noqa: PLC0415
    from fare.tapfile import TapFileError, parse_taps  # noqa: PLC0415

    feed = open_feed(args.feed)
    text, name = read_taps_text(args.taps)
    try:
        taps, problems = parse_taps(text, feed)
    except TapFileError as exc:
        raise UserError(f"{name}:{exc}") from None
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
    if args.format != "table":
        from fare.report import document, to_csv  # noqa: PLC0415 - lazy, as every command

        if args.format == "json":
            json.dump(document(charges, feed.timezone, feed.name), sys.stdout,
                      ensure_ascii=False, indent=2)
            sys.stdout.write("\n")
        else:
            sys.stdout.write(to_csv(charges, feed.timezone))
        return 0
    totals: dict[tuple[str, str], int] = {}  # per card and currency: never added across
    for c in charges:
        key = (c.card, c.currency)
        totals[key] = totals.get(key, 0) + c.amount
    _table(feed, charges, totals)
    return 0


def _table(feed: Feed, charges: list[Charge], totals: dict[tuple[str, str], int]) -> None:
    """One line per charge, its explanation wrapped beneath it: readable at 80 columns."""
    import textwrap  # noqa: PLC0415

    from rich.console import Console  # noqa: PLC0415 - only the table output needs rich
    from rich.markup import escape  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    from fare.currency import format_minor  # noqa: PLC0415

    several = len(feed.currencies) > 1  # then each amount shows its currency
    console = Console(highlight=False)
    tz = feed.timezone
    width = max(console.width - 6, 40)
    console.print(f"[bold]Charges ({', '.join(feed.currencies or (feed.currency,))})[/]")
    card_w = max((len(c.card) for c in charges), default=4)
    tap_w = max((len(c.tap_id) for c in charges), default=3)
    for c in charges:
        when = c.time.astimezone(tz).strftime("%Y-%m-%d %H:%M")
        shown = format_minor(c.amount, c.currency)
        if several:
            shown = f"{shown} {c.currency}"
        style = "green" if c.amount < 0 else "bold"
        console.print(f"{when}  {escape(c.card):<{card_w}}  {escape(c.tap_id):<{tap_w}}  "
                      f"{c.kind!s:<14} [{style}]{shown:>{13 if several else 9}}[/]")
        for line in textwrap.wrap(c.explain, width):
            console.print(f"    [dim]{escape(line)}[/]")
    summary = Table(title="Totals per card and currency")
    summary.add_column("card")
    summary.add_column("total", justify="right")
    summary.add_column("currency")
    for (card, cur), total in sorted(totals.items()):
        summary.add_row(card, format_minor(total, cur), cur)
    console.print(summary)
