"""The run's report: one JSON document, PNG plots (matplotlib, Agg) and a short HTML page.

Everything in the JSON is derived from the merged :class:`~sim.results.ShardResult` and the
run's settings, so two runs with the same seed and calibration write the same document
(apart from the ``wall`` section, which measures this machine).
"""

from __future__ import annotations

import html
import json
import math
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sim.calibration import Calibration
from sim.config import SimConfig
from sim.errors import SimError
from sim.results import (
    DWELL_BIN,
    LATENCY_BIN,
    WAIT_BIN,
    ShardResult,
    hist_mean,
    quantile,
)

SCHEMA = "tapsim.sim/1"


class ReportError(SimError):
    """An ``--out`` folder the report cannot be written to."""


REVENUE_COUNTS = ("revenue_fen.fares_priced to still_outstanding: QuickPass taps, through the "
                  "back office and the issuer; epurse_fares and epurse_refunds_owed: T-Union "
                  "purses, paid at the gate (closed loop, no issuer); cash fares: not counted")


@dataclass(frozen=True)
class RunInfo:
    city: str
    city_source: str
    routes: int
    stops: int
    patterns: int
    blocks: int
    buses: int
    replicas: int
    shards: int
    workers: int
    tap_off_routes: tuple[str, ...]
    wired: Mapping[str, str] = field(default_factory=dict)  # part -> real code used
    pricing: Mapping[str, object] = field(default_factory=dict)  # sim.core.pricing


def _ms(seconds: float) -> float:
    return round(seconds * 1e3, 3)


def _latency_statement(cfg: SimConfig, cal: Calibration) -> str:
    if cfg.fidelity == "full":
        return ("full: every tap ran the real kernel (emv.kernel) against the rider's own "
                "virtual card; outcome, cryptogram and the APDUs exchanged come from that run. "
                "The kernel's CPU share of the latency is drawn from the calibration "
                f"of {cal.created} so that the run repeats; radio and chip time are modelled.")
    return (f"calibrated: {cfg.calibration_samples} real kernel taps per card class were run "
            f"and timed (calibration of {cal.created}); each simulated tap draws its latency "
            "from that empirical distribution (numpy) and takes the class's kernel outcome. "
            "Radio and chip time are modelled from the APDUs the real taps exchanged.")


def build(result: ShardResult, cfg: SimConfig, cal: Calibration, info: RunInfo,
          wall_seconds: float) -> dict[str, Any]:
    """The report document (JSON-ready)."""
    r = result
    taps = r.taps
    counts = dict(sorted(r.counts.items()))
    dwell_mean = r.dwell_sum / r.served_stops if r.served_stops else 0.0
    unpaid_mean = r.dwell_unpaid_sum / r.served_stops if r.served_stops else 0.0
    increase = dwell_mean - unpaid_mean
    horizon = r.sim_seconds
    utilisation = r.queue_busy / (r.servers * horizon) if r.servers and horizon else 0.0
    prop = np.array(r.propagation) if r.propagation else np.zeros((0, 3))
    money = dict(r.money)
    day_charged = money.get("day_charged", 0)
    final_charged = money.get("final_charged", day_charged)
    series = [[round(float(t), 1), int(j), int(q)]
              for t, j, q in zip(r.backlog_t, r.backlog_journal, r.backlog_queue, strict=False)]
    return {
        "schema": SCHEMA,
        "city": {"name": info.city, "source": info.city_source, "routes": info.routes,
                 "stops": info.stops, "patterns": info.patterns, "blocks": info.blocks},
        "run": {
            "seed": cfg.seed, "date": cfg.date.isoformat(), "start_hour": cfg.start_hour,
            "hours": cfg.hours, "buses": info.buses, "replicas": info.replicas,
            "shards": info.shards, "fidelity": cfg.fidelity, "trips": r.trips,
            "cards": r.cards, "cards_seen": r.cards_seen,
        },
        "wired": dict(info.wired),
        "pricing": {**info.pricing, "revenue_counts": REVENUE_COUNTS},
        "service_calibration": {**asdict(cfg.service_calibration), "tap_latency_law": {
            "quickpass": cfg.latency.quickpass, "epurse": cfg.latency.epurse}},
        "latency_source": {
            "fidelity": cfg.fidelity,
            "statement": _latency_statement(cfg, cal),
            "calibration": {"created": cal.created, "notes": list(cal.notes),
                            "classes": {n: c.summary(cfg.latency)
                                        for n, c in sorted(cal.classes.items())}},
            "model": asdict(cfg.latency),
        },
        "taps": {"total": taps, **counts},
        "tap_latency_ms": {
            "p50": _ms(quantile(r.latency_hist, LATENCY_BIN, 0.50)),
            "p95": _ms(quantile(r.latency_hist, LATENCY_BIN, 0.95)),
            "p99": _ms(quantile(r.latency_hist, LATENCY_BIN, 0.99)),
            "mean": _ms(hist_mean(r.latency_hist, LATENCY_BIN)),
        },
        "dwell_s": {
            "served_stops": r.served_stops,
            "mean": round(dwell_mean, 3),
            "p50": round(quantile(r.dwell_hist, DWELL_BIN, 0.50), 1),
            "p95": round(quantile(r.dwell_hist, DWELL_BIN, 0.95), 1),
            "mean_if_nobody_paid": round(unpaid_mean, 3),
            "payment_increase": round(increase, 3),
            "payment_increase_pct": round(100 * increase / unpaid_mean, 2) if unpaid_mean else 0,
            "bus_lateness_mean": round(r.lateness_sum / r.trips, 1) if r.trips else 0.0,
            "model": asdict(cfg.dwell),
        },
        "uplink": {
            "availability_configured": round(cfg.link.availability, 5),
            "outages": r.link_outages,
            "down_fraction": round(r.link_down_seconds / (r.buses * horizon), 5)
            if r.buses and horizon else 0.0,
            "journaled_taps": int(r.counts["journaled"]),
            "backlog_max_journal_taps": int(r.backlog_journal.max()) if series else 0,
            "backlog_max_queue_taps": int(r.backlog_queue.max()) if series else 0,
            "backlog": {"every_s": cfg.sample_every, "columns": ["t_s", "journal", "queue"],
                        "series": series},
        },
        "deny_list": {
            "additions": int(r.counts["deny_list_additions"]),
            "additions_while_running": len(r.propagation),
            "propagation_s": {
                "mean_over_buses": round(float(prop[:, 0].mean()), 3) if len(prop) else 0.0,
                "p95_over_buses_mean": round(float(prop[:, 1].mean()), 3) if len(prop) else 0.0,
                "to_all_buses_mean": round(float(prop[:, 2].mean()), 3) if len(prop) else 0.0,
                "to_all_buses_max": round(float(prop[:, 2].max()), 3) if len(prop) else 0.0,
            },
        },
        "revenue_fen": {
            "fares_priced": money.get("day_fares", 0),
            "charged_by_day_close": day_charged,
            "at_risk_after_day_close": money.get("day_receivable", 0),
            "recovered_after_day": final_charged - day_charged,
            "lost_first_ride": money.get("final_first_ride_loss", 0),
            "still_outstanding": money.get("final_receivable", money.get("day_receivable", 0)),
            "settle_days": cfg.settle_days,
            "epurse_fares": money.get("epurse_fares", 0),
            "epurse_refunds_owed": money.get("epurse_refunds_owed", 0),
        },
        "declines": {
            "at_gate": dict(r.gate_declines.most_common()),
            "charges_by_issuer": dict(r.issuer_declines.most_common()),
            "deny_list_additions_by_reason": dict(r.deny_reasons.most_common()),
        },
        "core": {"events": dict(r.core_events.most_common()), "alerts": dict(r.alerts)},
        "backoffice": {
            "servers": cfg.backoffice.servers, "servers_all_shards": r.servers,
            "service": asdict(cfg.backoffice.service),
            "messages": r.queue_messages,
            "utilisation": round(utilisation, 5),
            "wait_ms": {"mean": _ms(hist_mean(r.wait_hist, WAIT_BIN)),
                        "p95": _ms(quantile(r.wait_hist, WAIT_BIN, 0.95)),
                        "p99": _ms(quantile(r.wait_hist, WAIT_BIN, 0.99))},
            "max_queue_messages": r.queue_max,
        },
        "population": r.population,
        "wall": {
            "seconds": round(wall_seconds, 3),
            "taps_per_second": round(taps / wall_seconds, 1) if wall_seconds > 0 else None,
            "workers": info.workers,
            "phases_cpu_s": {k: round(v, 3) for k, v in sorted(r.wall.items())},
            "calibration": {"source": cal.source, "path": cal.path},
            **({"kernel_live_host_ms_mean": round(
                1e3 * r.wall["kernel_live_host"] / r.wall["kernel_live_taps"], 4)}
               if r.wall.get("kernel_live_taps") else {}),
        },
    }


def deterministic(report: Mapping[str, Any]) -> dict[str, Any]:
    """The report without what describes this machine and this run's wall clock (``wall``:
    times, workers, where the calibration was found), for comparisons."""
    out = dict(report)
    out.pop("wall", None)
    return out


# --- files ---------------------------------------------------------------------------------


def check_out(out: Path) -> None:
    """Refuse an ``--out`` the report could not be written to, before any work: not a
    folder, or no right to write where ``write`` puts its files (beside ``out``, then in
    it).  Tried with a real temporary folder, so read-only file systems and permissions
    answer as they will at the end of the run."""
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out {out}: exists and is not a folder")
    base = out.parent
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise ReportError(f"--out {out}: {base} is not a folder")
    for where in (base, out) if out.exists() else (base,):
        try:
            Path(tempfile.mkdtemp(prefix=".tapsim-probe-", dir=where)).rmdir()
        except OSError as exc:
            raise ReportError(f"--out {out}: cannot write in {where} ({exc.strerror})") from None


def write(report: Mapping[str, Any], result: ShardResult, out: Path,
          on_written: Callable[[list[Path]], None] | None = None) -> list[Path]:
    """report.json, the plots and index.html under ``out``; the paths written.

    Nothing half-written: the files are made in a temporary folder beside ``out`` and moved
    in only when all are complete, with SIGINT and SIGTERM held off for the moves (a few
    renames), so an interrupted or failed write leaves ``out`` as it was.  ``on_written``
    is called with the paths while the signals are still held: a signal that arrived during
    the moves is raised only after it, so a caller can tell the report was written.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        (tmp / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False)
                                         + "\n", encoding="utf-8")
        images = _plots(report, result, tmp)
        (tmp / "index.html").write_text(_html(report, [p.name for p in images]),
                                        encoding="utf-8")
        names = ["report.json", *(p.name for p in images), "index.html"]
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            out.mkdir(exist_ok=True)
            for name in names:
                os.replace(tmp / name, out / name)
            if on_written is not None:
                on_written([out / name for name in names])
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [out / name for name in names]


def _plots(report: Mapping[str, Any], r: ShardResult, out: Path) -> list[Path]:
    import matplotlib  # noqa: PLC0415 - heavy, and only the file output needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    paths: list[Path] = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        path = out / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)

    # Tap latency.
    fig, ax = plt.subplots(figsize=(7, 3.6))
    per_ms = max(round(0.001 / LATENCY_BIN), 1)  # plot in 1 ms bins
    hist = r.latency_hist[: len(r.latency_hist) // per_ms * per_ms].reshape(-1, per_ms).sum(1)
    nz = np.nonzero(hist)[0]
    if len(nz):
        lo, hi = nz[0], nz[-1] + 1
        ax.bar(np.arange(lo, hi) + 0.5, hist[lo:hi], width=1.0, color="#3a7ca5")
    lat = report["tap_latency_ms"]
    for q in ("p50", "p95", "p99"):
        ax.axvline(lat[q], color="#d1495b", lw=1, ls="--")
        ax.text(lat[q], ax.get_ylim()[1] * 0.9, q, rotation=90, fontsize=8, ha="right")
    ax.set_xlabel("tap latency (ms)")
    ax.set_ylabel("taps")
    ax.set_title(f"Tap latency ({report['latency_source']['fidelity']})")
    save(fig, "tap_latency.png")

    # Dwell.
    fig, ax = plt.subplots(figsize=(7, 3.6))
    hist = r.dwell_hist
    upto = int(min(len(hist), max(np.nonzero(hist)[0][-1] + 1 if hist.any() else 1,
                                  1)))
    upto = min(upto, int(120 / DWELL_BIN))
    ax.bar(np.arange(upto) * DWELL_BIN, hist[:upto], width=DWELL_BIN, color="#00798c")
    d = report["dwell_s"]
    ax.axvline(d["mean"], color="#d1495b", lw=1, label=f"mean {d['mean']:.1f} s")
    ax.axvline(d["mean_if_nobody_paid"], color="#edae49", lw=1,
               label=f"if nobody paid {d['mean_if_nobody_paid']:.1f} s")
    ax.legend(fontsize=8)
    ax.set_xlabel("dwell at a served stop (s)")
    ax.set_ylabel("stops")
    ax.set_title(f"Dwell time (+{d['payment_increase_pct']}% from payment)")
    save(fig, "dwell.png")

    # Uplink backlog.
    fig, ax = plt.subplots(figsize=(7, 3.6))
    if len(r.backlog_t):
        hours = r.backlog_t / 3600.0
        ax.plot(hours, r.backlog_journal, label="journaled on buses (link down)", color="#d1495b")
        ax.plot(hours, r.backlog_queue, label="in the back-office queue", color="#3a7ca5")
    ax.set_xlabel("hour of day")
    ax.set_ylabel("taps not yet processed")
    ax.legend(fontsize=8)
    ax.set_title("Uplink backlog")
    save(fig, "backlog.png")

    # Deny-list propagation.
    fig, ax = plt.subplots(figsize=(7, 3.6))
    if r.propagation:
        prop = np.array(r.propagation)
        ax.hist(prop[:, 2], bins=40, color="#edae49", label="until every bus has it")
        ax.hist(prop[:, 0], bins=40, color="#3a7ca5", alpha=0.7, label="mean over buses")
        ax.legend(fontsize=8)
    ax.set_xlabel("seconds after the back office adds a card")
    ax.set_ylabel("deny-list additions")
    ax.set_title("Deny-list propagation delay")
    save(fig, "deny_propagation.png")

    # Revenue and declines.
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    rev = report["revenue_fen"]
    names = ["fares_priced", "charged_by_day_close", "recovered_after_day", "lost_first_ride",
             "still_outstanding", "epurse_fares"]
    a1.barh(names[::-1], [rev[n] / 100 for n in names[::-1]], color="#00798c")
    a1.set_xlabel("CNY")
    a1.set_title("Revenue (QuickPass through the core; e-purse at the gate)")
    d = report["declines"]
    dec = {**{f"gate: {k}": v for k, v in d["at_gate"].items()},
           **{f"charge: {k}": v for k, v in d["charges_by_issuer"].items()},
           **{f"deny list: {k}": v for k, v in d["deny_list_additions_by_reason"].items()}}
    top = sorted(dec.items(), key=lambda kv: -kv[1])[:10]
    if top:
        a2.barh([k[:40] for k, _ in top][::-1], [v for _, v in top][::-1], color="#d1495b")
    a2.set_title("Declines by reason")
    save(fig, "revenue_declines.png")
    return paths


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.3f}" if not math.isnan(v) else "-"
    if isinstance(v, int):
        return f"{v:,}"
    return html.escape(str(v))


def summary_rows(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The headline figures, for the terminal and the HTML page."""
    lat, dw, up = report["tap_latency_ms"], report["dwell_s"], report["uplink"]
    rev, bo, deny = report["revenue_fen"], report["backoffice"], report["deny_list"]
    wall = report.get("wall", {})
    cur = report.get("pricing", {}).get("currency", "CNY")
    return [
        ("city", f"{report['city']['name']} ({report['run']['buses']} buses, "
                 f"{report['run']['hours']} h from {report['run']['start_hour']:g}:00)"),
        ("taps", f"{report['taps']['total']:,} ({report['taps'].get('taps_quickpass', 0):,} "
                 f"QuickPass, {report['taps'].get('taps_epurse', 0):,} e-purse); "
                 f"{report['taps'].get('cash', 0):,} cash boardings"),
        ("tap latency", f"p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms, "
                        f"p99 {lat['p99']:.1f} ms ({report['latency_source']['fidelity']})"),
        ("dwell", f"mean {dw['mean']:.2f} s, +{dw['payment_increase']:.2f} s "
                  f"(+{dw['payment_increase_pct']}%) from payment"),
        ("calibration", f"{report['service_calibration']['name']} "
                        f"({report['service_calibration']['source']})"),
        ("uplink", f"{up['outages']:,} outages, {up['journaled_taps']:,} taps journaled, "
                   f"max backlog {up['backlog_max_journal_taps']:,} on buses"),
        ("deny list", f"{deny['additions']:,} additions, reach every bus in "
                      f"{deny['propagation_s']['to_all_buses_mean']:.0f} s on average"),
        ("fares", str(report.get("pricing", {}).get("statement", "-"))),
        ("revenue", f"QuickPass: priced {rev['fares_priced'] / 100:,.2f}, charged "
                    f"{rev['charged_by_day_close'] / 100:,.2f}, at risk "
                    f"{rev['at_risk_after_day_close'] / 100:,.2f}, lost "
                    f"{rev['lost_first_ride'] / 100:,.2f} {cur}; e-purse: "
                    f"{rev['epurse_fares'] / 100:,.2f} {cur} paid at the gate; "
                    "cash not counted"),
        ("back office", f"{bo['servers']} servers per shard, utilisation "
                        f"{100 * bo['utilisation']:.3g}%, "
                        f"mean wait {bo['wait_ms']['mean']:.2f} ms"),
        ("wall", f"{wall.get('seconds', 0):.1f} s, {wall.get('taps_per_second') or 0:,.0f} taps/s"
                 f" on {wall.get('workers', 1)} worker(s)"),
    ]


def _html(report: Mapping[str, Any], images: list[str]) -> str:
    rows = "\n".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                     for k, v in summary_rows(report))
    declines = "\n".join(
        f"<tr><td>{html.escape(part.replace('_', ' '))}</td><td>{html.escape(k)}</td>"
        f"<td>{_fmt(v)}</td></tr>"
        for part in ("at_gate", "charges_by_issuer", "deny_list_additions_by_reason")
        for k, v in report["declines"][part].items())
    imgs = "\n".join(f'<figure><img src="{html.escape(i)}" alt="{html.escape(i)}"></figure>'
                     for i in images)
    statement = html.escape(report["latency_source"]["statement"])
    wired = "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>"
                    for k, v in report.get("wired", {}).items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>tapsim fleet simulation: {html.escape(report['city']['name'])}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ text-align: left; padding: .25em .8em; border-bottom: 1px solid #ddd; }}
figure {{ margin: 1em 0; }} img {{ max-width: 100%; }}
</style></head><body>
<h1>Fleet simulation: {html.escape(report['city']['name'])}</h1>
<p>Seed {report['run']['seed']}, {report['run']['date']}, {report['run']['hours']} h,
{report['run']['buses']} buses in {report['run']['shards']} shards.</p>
<table>{rows}</table>
<h2>Tap latency</h2><p>{statement}</p>
<h2>Real code driven</h2><ul>{wired}</ul>
<h2>Declines</h2><table><tr><th>where</th><th>reason</th><th>count</th></tr>{declines}</table>
{imgs}
<p>All figures: <a href="report.json">report.json</a>.</p>
</body></html>
"""
