"""`tapsim sim`: a city's bus fleet for a day, driven through the real kernel, fares and core."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

from tapsim.cakeys import CA_KEYS_ENV, add_ca_keys_option, resolve_ca_keys
from tapsim.commands.tap import token_key
from tapsim.errors import Interrupted, UserError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "sim", help="simulate a bus fleet's day (SimPy) through the real core",
        description="Simulate a city's buses, riders, validators, cellular links and back "
                    "office for a day, with every card tap priced and authorized by the real "
                    "transaction core. Writes report.json, PNG plots and index.html to --out "
                    "(all or nothing: Ctrl-C leaves it as it was). Rides are priced by the "
                    "feed's GTFS-Fares v2 tables, or by --flat-fare for a feed without them; "
                    "the summary gives QuickPass and e-purse revenue apart (cash is not "
                    "counted).",
    )
    p.add_argument("--city", default="lanshan", metavar="NAME|PATH",
                   help="a shipped city (lanshan), a GTFS folder or .zip, or "
                        "synthetic[:routes=8,stops=20,buses=48,...] (default: lanshan)")
    p.add_argument("--hours", type=float, default=18.0, metavar="H",
                   help="simulated hours from --start (default 18)")
    p.add_argument("--start", type=float, default=5.0, metavar="HOUR",
                   help="local hour the simulation starts (default 5)")
    p.add_argument("--date", type=dt.date.fromisoformat, default=None, metavar="YYYY-MM-DD",
                   help="service date (default 2026-03-02, a Monday: results never depend on "
                        "today)")
    p.add_argument("--buses", type=int, default=None, metavar="N",
                   help="buses in service, at most 100,000 (default: the city's timetable; "
                        "more than it has replicates the city)")
    p.add_argument("--peak-rate", type=float, default=12.0, metavar="R",
                   help="riders arriving per hour at a stop (one direction) at the busiest "
                        "time of day (default 12)")
    p.add_argument("--seed", type=int, default=1, metavar="S", help="random seed (default 1)")
    p.add_argument("--out", type=Path, default=Path("sim-report"), metavar="DIR",
                   help="where report.json, the plots and index.html go (default ./sim-report)")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.add_argument("--fidelity", choices=("calibrated", "full"), default="calibrated",
                   help="calibrated: latency measured from the real kernel at start-up "
                        "(default); full: the real kernel runs for every tap")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes (default: as many as make the run faster, at most "
                        "one per CPU and one per shard; a small run stays in one process)")
    p.add_argument("--cluster", default=None, metavar="tcp://HOST:PORT",
                   help="run the shards on the Dask scheduler at this address (workers started "
                        "with `dask worker ADDRESS --nthreads 1`) instead of local processes; "
                        "the report is the same as a local run's with the same seed "
                        "(needs the cluster extra: pip install 'tapsim[cluster]')")
    p.add_argument("--shards", type=int, default=None, metavar="K",
                   help="route groups, each with its own core and riders (default: one per "
                        "200,000 expected riders, at least 4); results depend on the seed "
                        "and K, not on --workers")
    p.add_argument("--servers", type=int, default=2, metavar="C",
                   help="back-office servers per shard (default 2)")
    add_ca_keys_option(p)
    p.add_argument("--flat-fare", type=int, default=None, metavar="FEN",
                   help="price every boarding at this flat fare, in CNY fen (200 = 2.00 CNY), "
                        "for a GTFS feed without fare tables (fare_products.txt), which is "
                        "refused without it; refused for a feed that has them")
    p.add_argument("--config", default="field-2026", metavar="FILE|NAME",
                   help="service times and tap latency: a TOML file, or a shipped calibration "
                        "(field-2026, the default: published field figures; legacy-2025: the "
                        "model before them); see sim/README.md, Calibration")
    p.add_argument("--recalibrate", action="store_true",
                   help="measure the kernel again instead of reusing the stored calibration")
    p.set_defaults(func=main)


def _config(args: argparse.Namespace) -> Any:
    from sim.config import (  # noqa: PLC0415
        DEFAULT_DATE,
        BackOfficeModel,
        SimConfig,
        with_calibration,
    )
    from sim.demand import DemandProfile  # noqa: PLC0415

    cfg = SimConfig(hours=args.hours, start_hour=args.start, date=args.date or DEFAULT_DATE,
                    seed=args.seed, buses=args.buses, fidelity=args.fidelity,
                    shards=args.shards, backoffice=BackOfficeModel(servers=args.servers),
                    demand=DemandProfile(peak_rate=args.peak_rate),
                    flat_fare=args.flat_fare)
    return with_calibration(cfg, args.config)


def main(args: argparse.Namespace) -> int:
    from rich.console import Console  # noqa: PLC0415 - only the human output needs it

    from sim.errors import SimError  # noqa: PLC0415 - keeps `tapsim --help` light
    from sim.report import check_out, summary_rows, write  # noqa: PLC0415
    from sim.simulate import simulate  # noqa: PLC0415

    if args.cluster is not None and args.workers is not None:
        raise UserError("--workers: with --cluster the cluster's workers run the shards; "
                        "give one or the other")
    if args.cluster is not None and args.ca_keys is not None and args.fidelity == "full":
        raise UserError("--ca-keys: with --cluster and --fidelity full the kernels run on the "
                        f"workers; start them with {CA_KEYS_ENV} set to the file instead")
    if args.ca_keys is not None:  # checked here; the shards' kernels read it from the environment
        resolve_ca_keys(args.ca_keys)
        os.environ[CA_KEYS_ENV] = str(args.ca_keys.resolve())
    if args.workers is not None and args.workers < 1:
        raise UserError("--workers must be at least 1")
    written: list[Path] = []
    progress = _Progress(enabled=not args.json and sys.stderr.isatty())
    try:
        cfg = _config(args)  # every option checked, and --out tried, before any work
        check_out(args.out)
        with progress:
            run = simulate(args.city, cfg, workers=args.workers,
                           token_key=token_key(), recalibrate=args.recalibrate,
                           progress=progress.update, cluster=args.cluster,
                           notice=_notice)
        paths = write(run.report, run.result, args.out, on_written=written.extend)
    except SimError as exc:
        raise UserError(str(exc)) from None
    except ValueError as exc:  # a fare table, a card profile or a date the parts refused
        raise UserError(f"{args.city}: {exc}") from None
    except OSError as exc:
        raise UserError(f"{args.out}: cannot write the report ({exc.strerror})") from None
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: the workers are stopped by now
        raise Interrupted.of(exc, progress.what_was_done(written)) from None
    if args.json:
        print(json.dumps(run.report, ensure_ascii=False))
        return 0
    console = Console(highlight=False, soft_wrap=True)
    for key, value in summary_rows(run.report):
        console.print(f"[bold]{key:<12}[/] {value}")
    console.print(f"[dim]{run.report['latency_source']['statement']}[/]")
    console.print(f"report: {paths[-1]}")
    return 0


def _notice(text: str) -> None:
    print(f"tapsim: note: {text}", file=sys.stderr)


class _Progress:
    """A rich progress bar on stderr (simulated time done, over all shards)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None
        self._task: Any = None
        self.done: dict[int, float] = {}  # shard -> fraction simulated (1.0: its result is in)

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.console import Console  # noqa: PLC0415
            from rich.progress import (  # noqa: PLC0415
                BarColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._bar = Progress(TextColumn("simulating"), BarColumn(),
                                 TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                                 console=Console(stderr=True), transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task("sim", total=1.0)
        return self

    def update(self, done: dict[int, float]) -> None:
        self.done = done
        if self._bar is not None and done:
            self._bar.update(self._task, completed=sum(done.values()) / len(done))

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)

    def what_was_done(self, written: list[Path]) -> str:
        """One line for an interrupted run."""
        if written:
            return f"report written to {written[0].parent}, summary not printed"
        if not self.done:
            return "stopped before the first shard started, nothing written"
        finished = sum(1 for f in self.done.values() if f >= 1.0)
        return f"{finished} of {len(self.done)} shards simulated, nothing written"
