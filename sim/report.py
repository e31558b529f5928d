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
import textwrap
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
    PAYMENT_PATHS,
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


# What an operator calls each payment path (sim.results.PAYMENT_PATHS), for plots and pages.
PATH_LABELS = {
    "quickpass_online": "QuickPass, link up (sent at once)",
    "quickpass_offline": "QuickPass, link down (journaled)",
    "epurse": "T-Union e-purse (paid at the gate)",
    "declined_at_gate": "refused at the validator (any card)",
}

UPLINK_PERIOD = ("service hours only: outages that overlap them (one in progress when service "
                 "starts included), down time clipped to them; the drain after the last trip, "
                 "while journals and the queue empty, is not counted")

REFUSALS_COUNT = ("each refusal once: a tap the validator refused (the rider pays cash "
                  "instead), or a charge the bank declined (day close or recovery); the deny-list "
                  "additions that follow a bank's refusal are its consequence, not refusals of "
                  "their own, and are listed apart")

BACKLOG_IN_FLIGHT = ("taps sent over the link and not yet ingested by the core: on the link, "
                     "waiting for a back-office server or in service")

WALL_NOTE = ("this machine, this run: not part of the simulated result. seconds: the run's "
             "wall clock (calibration, shards, merge). phases_wall_s: wall-clock seconds of "
             "each shard phase, summed over shards (which ran side by side on the workers); "
             "day_in_core and day_in_card_taps are parts of day. phases_cpu_s: CPU seconds of "
             "the thread that ran each shard phase (time.thread_time, wherever it ran), summed "
             "over shards; shards_cpu_s: their total. prepare_wall_s, prepare_cpu_s: the driving "
             "process before the shards (city, kernel calibration, shard plan)")


def _ms(seconds: float) -> float:
    return round(seconds * 1e3, 3)


def clock(seconds: float) -> str:
    """A time of the service day as an operator reads it: ``07:30``, ``00:15 (+1 day)``."""
    minutes = round(seconds / 60.0)
    h, m = divmod(minutes, 60)
    return f"{h % 24:02d}:{m:02d}" + (f" (+{h // 24} day)" if h >= 24 else "")


def _latency_stats(hist: Any) -> dict[str, Any]:
    return {"taps": int(hist.sum()),
            "p50": _ms(quantile(hist, LATENCY_BIN, 0.50)),
            "p95": _ms(quantile(hist, LATENCY_BIN, 0.95)),
            "p99": _ms(quantile(hist, LATENCY_BIN, 0.99)),
            "mean": _ms(hist_mean(hist, LATENCY_BIN))}


def gate_label(reason: str) -> str:
    """A validator's refusal reason in an operator's words (``kernel: card-expired`` ->
    ``card expired (card reader)``)."""
    if reason == "deny-listed at the validator":
        return "card on the deny list"
    who, _, why = reason.partition(": ")
    where = {"kernel": "card reader", "validator": "validator"}.get(who)
    if where is None or not why:
        return reason.replace("-", " ")
    return f"{why.replace('-', ' ')} ({where})"


def refusals(declines: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    """Each refusal once, by who refused and why (see ``REFUSALS_COUNT``)."""
    gate: dict[str, int] = {}
    for reason, n in declines["at_gate"].items():
        label = gate_label(reason)
        gate[label] = gate.get(label, 0) + n
    return {"taps_refused_at_validator": dict(sorted(gate.items(), key=lambda kv: -kv[1])),
            "charges_declined_by_bank": dict(declines["charges_by_issuer"])}


def _latency_statement(cfg: SimConfig, cal: Calibration) -> str:
    """Where each tap's outcome and latency came from: the fidelity decides the outcome, the
    service calibration's tap-latency law (per payment path) the latency."""
    if cfg.fidelity == "full":
        outcome = ("full: every tap ran the real kernel (emv.kernel) against the rider's own "
                   "virtual card; outcome, cryptogram and the APDUs exchanged come from that "
                   "run")
    else:
        outcome = (f"calibrated: {cfg.calibration_samples} real kernel taps per card class "
                   f"were run and timed (calibration of {cal.created}); each simulated tap "
                   "takes its class's kernel outcome")
    laws = {"quickpass": cfg.latency.quickpass, "epurse": cfg.latency.epurse}
    fielded = " and ".join(p for p, law in laws.items() if law == "field")
    kernel = " and ".join(p for p, law in laws.items() if law == "kernel")
    parts = [outcome]
    if fielded:
        parts.append(f"{fielded} tap latency is drawn from the field law of the service "
                     f"calibration {cfg.service_calibration.name!r} (service_calibration."
                     "tap_latency_law; sim/README.md, Calibration)")
    if kernel:
        parts.append(f"{kernel} tap latency is drawn from the kernel's measured timings "
                     f"(calibration of {cal.created}; numpy), radio and chip time modelled "
                     "from the APDUs the real taps exchanged")
    return "; ".join(parts) + "."


def build(result: ShardResult, cfg: SimConfig, cal: Calibration, info: RunInfo,
          wall_seconds: float, *, prepare: tuple[float, float] | None = None) -> dict[str, Any]:
    """The report document (JSON-ready).  ``prepare``: the driver's (wall, CPU) seconds
    before the shards (city, calibration, shard plan), for the ``wall`` section."""
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
            "hours": cfg.hours, "service": f"{clock(cfg.start)}-{clock(cfg.horizon)}",
            "buses": info.buses, "replicas": info.replicas,
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
        "tap_latency_ms": {k: v for k, v in _latency_stats(r.latency_hist).items()
                           if k != "taps"},
        "tap_latency_by_payment_path_ms": {name: _latency_stats(r.latency_by_path[name])
                                           for name in PAYMENT_PATHS},
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
            "period": {"from": clock(cfg.start), "to": clock(cfg.horizon),
                       "seconds": round(horizon, 3), "counts": UPLINK_PERIOD},
            "availability_configured": round(cfg.link.availability, 5),
            "down_fraction_configured": round(1.0 - cfg.link.availability, 5),
            "outages": r.link_outages,
            "down_fraction": round(r.link_down_seconds / (r.buses * horizon), 5)
            if r.buses and horizon else 0.0,
            "journaled_taps": int(r.counts["journaled"]),
            "backlog_max_journal_taps": int(r.backlog_journal.max()) if series else 0,
            "backlog_max_in_flight_taps": int(r.backlog_queue.max()) if series else 0,
            "backlog": {"every_s": cfg.sample_every,
                        "columns": ["t_s", "journal", "in_flight"],
                        "journal": "taps journaled on buses whose link is down",
                        "in_flight": BACKLOG_IN_FLIGHT,
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
            "by_payment_path": _by_path(money, epurse_clearing(r.clearing, cfg)),
        },
        "declines": {
            "at_gate": dict(r.gate_declines.most_common()),
            "charges_by_issuer": dict(r.issuer_declines.most_common()),
            "deny_list_additions_by_reason": dict(r.deny_reasons.most_common()),
            "refusals": refusals({"at_gate": dict(r.gate_declines.most_common()),
                                  "charges_by_issuer": dict(r.issuer_declines.most_common())}),
            "refusals_count": REFUSALS_COUNT,
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
            "note": WALL_NOTE,
            "seconds": round(wall_seconds, 3),
            "taps_per_second": round(taps / wall_seconds, 1) if wall_seconds > 0 else None,
            "workers": info.workers,
            "phases_wall_s": {k: round(v, 3) for k, v in sorted(r.wall.items())
                              if not k.startswith("kernel_live")},
            "phases_cpu_s": {k: round(v, 3) for k, v in sorted(r.cpu.items())},
            "shards_cpu_s": round(sum(r.cpu.values()), 3),
            **({"prepare_wall_s": round(prepare[0], 3), "prepare_cpu_s": round(prepare[1], 3)}
               if prepare is not None else {}),
            "calibration": {"source": cal.source, "path": cal.path},
            **({"kernel_live_host_ms_mean": round(
                1e3 * r.wall["kernel_live_host"] / r.wall["kernel_live_taps"], 4)}
               if r.wall.get("kernel_live_taps") else {}),
        },
    }


ISSUER_NAMES = {"home": "0000 TEST city A (home)", "other_city": "9901 TEST city B (other)"}
CLEARING_STATEMENT = {
    "full": "full fidelity: the real clearing core (clearing.core.clear_day, TEST issuers "
            "0000 and 9901) verified the TAC of every e-purse record that reached the back "
            "office by the end of the service period (cleared or refused with its reason); "
            "records still journaled on buses then are pending (the next day's batch)",
    "calibrated": "calibrated fidelity: simulated taps carry no TAC, so clearing is modelled: "
                  "e-purse records that reached the back office by the end of the service "
                  "period count as cleared, those still journaled on buses as pending (the "
                  "next day's batch); refused is 0 by construction (no record to refuse; "
                  "--fidelity full verifies every TAC)",
}


def epurse_clearing(c: Mapping[str, int], cfg: SimConfig) -> dict[str, Any]:
    """The day's e-purse clearing (fen): cleared, pending and refused per card issuer, the
    refusals by reason and what each issuer owes each operator (sim.model, ``_clear``)."""
    by_issuer = {group: {"issuer": name,
                         **{w: c.get(f"{group}:{w}", 0) for w in ("cleared", "pending",
                                                                  "refused")},
                         **{f"{w}_records": c.get(f"{group}:{w}_n", 0)
                            for w in ("cleared", "pending", "refused")}}
                 for group, name in ISSUER_NAMES.items()}
    positions = [{"issuer": k.split(":")[1], "operator": k.split(":", 2)[2], "owes": v}
                 for k, v in sorted(c.items()) if k.startswith("position:")]
    return {"statement": CLEARING_STATEMENT[cfg.fidelity],
            "cut_off": "end of the service period",
            "by_issuer": by_issuer,
            "total": {w: sum(b[w] for b in by_issuer.values())
                      for w in ("cleared", "pending", "refused")},
            "refused_by_reason": {k.split(":", 1)[1]: v for k, v in sorted(c.items())
                                  if k.startswith("reason:")},
            "positions": positions}


def _by_path(money: Mapping[str, int], clearing: dict[str, Any]) -> dict[str, Any]:
    """Fare revenue by how it was paid (fen): the QuickPass aggregates charged to the bank
    account through the back office, and the e-purse fares paid on the card at the gate
    (with what the day's clearing did with them)."""
    day_charged = money.get("day_charged", 0)
    quickpass = {
        "fares_priced": money.get("day_fares", 0),
        "charged_by_day_close": day_charged,
        "recovered_after_day": money.get("final_charged", day_charged) - day_charged,
        "lost_first_ride": money.get("final_first_ride_loss", 0),
        "still_outstanding": money.get("final_receivable", money.get("day_receivable", 0)),
    }
    paid = money.get("epurse_fares", 0)
    epurse: dict[str, Any] = {"fares_paid_at_gate": paid,
                              "refunds_owed": money.get("epurse_refunds_owed", 0),
                              "clearing": clearing}
    total = quickpass["fares_priced"] + paid
    return {"quickpass_aggregate": quickpass, "epurse": epurse,
            "share_of_fares_pct": {
                "quickpass_aggregate": round(100 * quickpass["fares_priced"] / total, 2)
                if total else 0.0,
                "epurse": round(100 * paid / total, 2)
                if total else 0.0},
            "cash": "not counted (cash boardings are riders, not revenue, in this model)"}


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


PATH_COLOURS = {"quickpass_online": "#3a7ca5", "quickpass_offline": "#2f4858",
                "epurse": "#00a878", "declined_at_gate": "#d1495b"}
QUICKPASS_PARTS = (("charged_by_day_close", "charged by the day close", "#3a7ca5"),
                   ("recovered_after_day", "recovered after the day", "#81c3d7"),
                   ("still_outstanding", "still owed", "#edae49"),
                   ("lost_first_ride", "lost (first ride written off)", "#d1495b"))


EPURSE_PARTS = (("cleared", "cleared by the day's clearing", "#00a878"),
                ("pending", "pending (journaled on buses)", "#9bd6c2"),
                ("refused", "refused by clearing", "#d1495b"))


def _wrap(label: str, width: int = 30) -> str:
    """A label on lines of ``width`` characters, broken between words, never inside one."""
    return "\n".join(textwrap.wrap(label, width, break_long_words=False)) or label


def figures(report: Mapping[str, Any], r: ShardResult) -> dict[str, Any]:
    """The report's plots as matplotlib figures, by file name (not yet saved): what
    :func:`write` saves, and what the tests read (titles, labels, legends)."""
    import matplotlib  # noqa: PLC0415 - heavy, and only the file output needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.patches import Patch  # noqa: PLC0415
    from matplotlib.ticker import FuncFormatter, MultipleLocator  # noqa: PLC0415

    figs: dict[str, Any] = {}
    cur = report.get("pricing", {}).get("currency", "CNY")

    # Tap latency, by payment path (1 ms bins; every path in the legend, with its count).
    fig, ax = plt.subplots(figsize=(8, 4), layout="constrained")
    per_ms = max(round(0.001 / LATENCY_BIN), 1)
    by_path = report["tap_latency_by_payment_path_ms"]
    hists = {name: h[: len(h) // per_ms * per_ms].reshape(-1, per_ms).sum(1)
             for name, h in r.latency_by_path.items()}
    nz = np.nonzero(sum(hists.values()))[0] if hists else np.zeros(0, dtype=np.int64)
    lo, hi = (int(nz[0]), int(nz[-1]) + 1) if len(nz) else (0, 1)
    edges = np.arange(lo, hi + 1)
    for name in PAYMENT_PATHS:
        s = by_path[name]
        label = (f"{PATH_LABELS[name]}: {s['taps']:,} taps, p50 {s['p50']:.0f} ms, "
                 f"p99 {s['p99']:.0f} ms" if s["taps"] else f"{PATH_LABELS[name]}: no taps")
        ax.stairs(hists[name][lo:hi], edges, color=PATH_COLOURS[name], lw=1.4, label=label)
    ax.set_xlabel("tap latency (ms)")
    ax.set_ylabel("taps per 1 ms bin")
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(f"Tap latency by payment path ({report['latency_source']['fidelity']})")
    figs["tap_latency.png"] = fig

    # Dwell.
    fig, ax = plt.subplots(figsize=(7, 3.6), layout="constrained")
    hist = r.dwell_hist
    upto = int(min(len(hist), max(np.nonzero(hist)[0][-1] + 1 if hist.any() else 1, 1)))
    upto = min(upto, int(120 / DWELL_BIN))
    ax.bar(np.arange(upto) * DWELL_BIN, hist[:upto], width=DWELL_BIN, color="#00798c")
    d = report["dwell_s"]
    ax.axvline(d["mean"], color="#d1495b", lw=1, label=f"mean {d['mean']:.1f} s")
    ax.axvline(d["mean_if_nobody_paid"], color="#edae49", lw=1,
               label=f"if nobody paid {d['mean_if_nobody_paid']:.1f} s")
    ax.legend(fontsize=8)
    ax.set_xlabel("dwell at a served stop (s)")
    ax.set_ylabel("stops per 0.1 s bin")
    ax.set_title(f"Dwell time (+{d['payment_increase_pct']}% from payment)")
    figs["dwell.png"] = fig

    # Uplink backlog, against the clock.
    fig, ax = plt.subplots(figsize=(7, 3.6), layout="constrained")
    if len(r.backlog_t):
        ax.plot(r.backlog_t, r.backlog_journal, color="#d1495b",
                label="journaled on buses whose link is down")
        ax.plot(r.backlog_t, r.backlog_queue, color="#3a7ca5",
                label="sent, not yet ingested by the core\n(on the link, queued or in service)")
    span = float(r.backlog_t[-1] - r.backlog_t[0]) if len(r.backlog_t) > 1 else 3600.0
    step = next((s for s in (900, 1800, 3600, 7200, 10800) if span / s <= 9), 21600)
    ax.xaxis.set_major_locator(MultipleLocator(step))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: clock(x)))
    ax.set_xlabel("time of day (local)")
    ax.set_ylabel("taps (sampled every "
                  f"{report['uplink']['backlog']['every_s']:g} s)")
    ax.legend(fontsize=8)
    ax.set_title("Uplink backlog (taps not yet at the back office)")
    figs["backlog.png"] = fig

    # Deny-list propagation.
    fig, ax = plt.subplots(figsize=(7, 3.6), layout="constrained")
    if r.propagation:
        prop = np.array(r.propagation)
        ax.hist(prop[:, 2], bins=40, color="#edae49", label="until every bus has it")
        ax.hist(prop[:, 0], bins=40, color="#3a7ca5", alpha=0.7, label="mean over buses")
        ax.legend(fontsize=8)
    ax.set_xlabel("delay after the back office adds a card (s)")
    ax.set_ylabel("deny-list additions")
    ax.set_title("Deny-list propagation delay")
    figs["deny_propagation.png"] = fig

    # Revenue by payment path, and refusals by reason (each counted once).
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 5), width_ratios=(1, 1.1),
                                 layout="constrained")
    paths = report["revenue_fen"]["by_payment_path"]
    qp, ep = paths["quickpass_aggregate"], paths["epurse"]
    rows = ["QuickPass\n(bank account, aggregated)", "T-Union e-purse\n(paid at the gate)"]
    left = 0.0
    for key, label, colour in QUICKPASS_PARTS:
        value = qp[key] / 100
        a1.barh(rows[0], value, left=left, color=colour, label=f"QuickPass: {label}")
        left += value
    left = 0.0
    for key, label, colour in EPURSE_PARTS:
        value = ep["clearing"]["total"][key] / 100
        a1.barh(rows[1], value, left=left, color=colour, label=f"e-purse: {label}")
        left += value
    share = paths["share_of_fares_pct"]
    for y, (total, pct) in enumerate(((qp["fares_priced"], share["quickpass_aggregate"]),
                                      (ep["fares_paid_at_gate"], share["epurse"]))):
        a1.text(total / 100, y, f" {total / 100:,.2f} {cur} ({pct:g}%)", va="center",
                fontsize=8)
    a1.invert_yaxis()
    a1.margins(x=0.35)
    a1.set_xlabel(f"fares ({cur}, yuan)")
    a1.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    a1.set_title("Fare revenue by payment path (cash not counted)")
    ref = report["declines"]["refusals"]
    bars = ([(_wrap(k), v, "#d1495b") for k, v in ref["taps_refused_at_validator"].items()]
            + [(_wrap(k), v, "#7a5195") for k, v in ref["charges_declined_by_bank"].items()])
    if bars:
        ys = np.arange(len(bars))
        a2.barh(ys, [v for _, v, _ in bars], color=[c for _, _, c in bars])
        a2.set_yticks(ys, [k for k, _, _ in bars], fontsize=7)
        a2.invert_yaxis()
    a2.legend(handles=[Patch(color="#d1495b", label="tap refused at the validator"),
                       Patch(color="#7a5195", label="charge declined by the bank")],
              fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    a2.set_xlabel("refusals (each counted once)")
    a2.set_title("Refusals by reason")
    figs["revenue_declines.png"] = fig
    return figs


def _plots(report: Mapping[str, Any], r: ShardResult, out: Path) -> list[Path]:
    import matplotlib.pyplot as plt  # noqa: PLC0415

    paths: list[Path] = []
    for name, fig in figures(report, r).items():
        # Laid out by the constrained engine as the figure is drawn for the file: one draw,
        # where tight_layout() drew each figure once more (~0.1 s of a small run's ~2 s).
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        paths.append(out / name)
    return paths


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.3f}" if not math.isnan(v) else "-"
    if isinstance(v, int):
        return f"{v:,}"
    return html.escape(str(v))


def summary_rows(report: Mapping[str, Any], machine: bool = True) -> list[tuple[str, str]]:
    """The headline figures, for the terminal and the HTML page; with ``machine``, this
    machine's wall-clock and CPU figures last (:func:`wall_rows`)."""
    lat, dw, up = report["tap_latency_ms"], report["dwell_s"], report["uplink"]
    rev, bo, deny = report["revenue_fen"], report["backoffice"], report["deny_list"]
    run = report["run"]
    cur = report.get("pricing", {}).get("currency", "CNY")
    paths = rev["by_payment_path"]
    qp, ep = paths["quickpass_aggregate"], paths["epurse"]
    share = paths["share_of_fares_pct"]
    start = run["start_hour"] * 3600.0
    ref = report["declines"]["refusals"]
    return [
        ("city", f"{report['city']['name']} ({run['buses']} buses, "
                 f"{clock(start)}-{clock(start + run['hours'] * 3600.0)}, {run['hours']:g} h)"),
        ("taps", f"{report['taps']['total']:,} ({report['taps'].get('taps_quickpass', 0):,} "
                 f"QuickPass, {report['taps'].get('taps_epurse', 0):,} e-purse, "
                 f"{report['taps'].get('declined_at_gate', 0):,} refused); "
                 f"{report['taps'].get('cash', 0):,} cash boardings"),
        ("tap latency", f"p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms, "
                        f"p99 {lat['p99']:.1f} ms ({report['latency_source']['fidelity']})"),
        ("dwell", f"mean {dw['mean']:.2f} s, +{dw['payment_increase']:.2f} s "
                  f"(+{dw['payment_increase_pct']}%) from payment"),
        ("calibration", f"{report['service_calibration']['name']} "
                        f"({report['service_calibration']['source']})"),
        ("uplink", f"{up['outages']:,} outages, down {100 * up['down_fraction']:.2f}% of the "
                   f"time (configured {100 * up['down_fraction_configured']:.2f}%), "
                   f"{up['period']['from']}-{up['period']['to']}; "
                   f"{up['journaled_taps']:,} taps journaled, "
                   f"max backlog {up['backlog_max_journal_taps']:,} on buses"),
        ("deny list", f"{deny['additions']:,} additions, reach every bus in "
                      f"{deny['propagation_s']['to_all_buses_mean']:.0f} s on average"),
        ("refusals", f"{sum(ref['taps_refused_at_validator'].values()):,} taps refused at the "
                     f"validator, {sum(ref['charges_declined_by_bank'].values()):,} charges "
                     "declined by the bank"),
        ("fares", str(report.get("pricing", {}).get("statement", "-"))),
        ("revenue", f"QuickPass: priced {qp['fares_priced'] / 100:,.2f} {cur} "
                    f"({share['quickpass_aggregate']:g}% of fares; charged "
                    f"{qp['charged_by_day_close'] / 100:,.2f} by the day close, at risk "
                    f"{rev['at_risk_after_day_close'] / 100:,.2f}, lost "
                    f"{qp['lost_first_ride'] / 100:,.2f}); e-purse: "
                    f"{ep['fares_paid_at_gate'] / 100:,.2f} {cur} paid at the gate "
                    f"({share['epurse']:g}%); cash not counted"),
        ("e-purse clearing", _clearing_line(ep["clearing"], cur)),
        ("back office", f"{bo['servers']} servers per shard, utilisation "
                        f"{100 * bo['utilisation']:.3g}%, "
                        f"mean wait {bo['wait_ms']['mean']:.2f} ms"),
        *(wall_rows(report) if machine else []),
    ]


def wall_rows(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    """This machine's figures for the run (differ from run to run, unlike the rest)."""
    wall = report.get("wall", {})
    cpu = wall.get("phases_cpu_s", {})
    return [
        ("wall", f"{wall.get('seconds', 0):.1f} s, {wall.get('taps_per_second') or 0:,.0f} taps/s"
                 f" on {wall.get('workers', 1)} worker(s); shards used "
                 f"{wall.get('shards_cpu_s', 0):.1f} CPU-s ("
                 + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items()) + ")"
                 + (f"; before them {wall['prepare_wall_s']:.1f} s, "
                    f"{wall['prepare_cpu_s']:.1f} CPU-s" if "prepare_cpu_s" in wall else "")),
    ]


def _table(head: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = "\n".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>"
                    for row in rows)
    return f"<table><tr>{th}</tr>\n{trs}</table>"


def _yuan(fen: int) -> str:
    return f"{fen / 100:,.2f}"


def _clearing_line(c: Mapping[str, Any], cur: str) -> str:
    parts = [f"{name}: cleared {b['cleared'] / 100:,.2f}, pending {b['pending'] / 100:,.2f}, "
             f"refused {b['refused'] / 100:,.2f}" for name, b in
             (("home", c["by_issuer"]["home"]), ("other cities", c["by_issuer"]["other_city"]))]
    owed = ", ".join(f"{p['issuer']} owes {p['operator']} {p['owes'] / 100:,.2f}"
                     for p in c["positions"]) or "nothing owed"
    return f"{'; '.join(parts)} {cur}; {owed}"


def _html(report: Mapping[str, Any], images: list[str]) -> str:
    rows = "\n".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                     for k, v in summary_rows(report, machine=False))
    cur = html.escape(report.get("pricing", {}).get("currency", "CNY"))
    paths = report["revenue_fen"]["by_payment_path"]
    qp, ep = paths["quickpass_aggregate"], paths["epurse"]
    share = paths["share_of_fares_pct"]
    revenue = _table(
        ("payment path", "what", f"{cur} (yuan)"),
        [("QuickPass (bank account, aggregated)", "fares priced", _yuan(qp["fares_priced"])),
         ("", "charged by the day close", _yuan(qp["charged_by_day_close"])),
         ("", "recovered after the day", _yuan(qp["recovered_after_day"])),
         ("", "lost (first ride written off)", _yuan(qp["lost_first_ride"])),
         ("", "still owed", _yuan(qp["still_outstanding"])),
         ("", "share of all fares", f"{share['quickpass_aggregate']:g} %"),
         ("T-Union e-purse (paid at the gate)", "fares paid", _yuan(ep["fares_paid_at_gate"])),
         ("", "refunds owed to purses", _yuan(ep["refunds_owed"])),
         ("", "share of all fares", f"{share['epurse']:g} %"),
         *[(f"e-purse clearing: {b['issuer']}", what, _yuan(b[key]))
           for b in ep["clearing"]["by_issuer"].values()
           for key, what in (("cleared", "cleared"), ("pending", "pending (journaled)"),
                             ("refused", "refused by clearing"))],
         *[("e-purse clearing: positions", f"{p['issuer']} owes {p['operator']}",
            _yuan(p["owes"])) for p in ep["clearing"]["positions"]],
         ("e-purse clearing", "how", ep["clearing"]["statement"]),
         ("cash", "not counted", "-")])
    by_path = report["tap_latency_by_payment_path_ms"]
    latency = _table(("payment path", "taps", "p50 (ms)", "p95 (ms)", "p99 (ms)", "mean (ms)"),
                     [(PATH_LABELS[n], s["taps"], s["p50"], s["p95"], s["p99"], s["mean"])
                      for n, s in by_path.items()])
    dec = report["declines"]
    ref = dec["refusals"]
    refused = _table(("who refused", "reason", "count"),
                     [("validator (tap)", k, v)
                      for k, v in ref["taps_refused_at_validator"].items()]
                     + [("bank (charge)", k, v)
                        for k, v in ref["charges_declined_by_bank"].items()])
    additions = _table(("reason", "cards added"),
                       list(dec["deny_list_additions_by_reason"].items()))
    up = report["uplink"]
    imgs = "\n".join(f'<figure><img src="{html.escape(i)}" alt="{html.escape(i)}"></figure>'
                     for i in images)
    statement = html.escape(report["latency_source"]["statement"])
    wired = "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>"
                    for k, v in report.get("wired", {}).items())
    machine = "\n".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                        for k, v in wall_rows(report))
    run = report["run"]
    start = run["start_hour"] * 3600.0
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
<p>Seed {run['seed']}, {run['date']}, {clock(start)}-{clock(start + run['hours'] * 3600.0)}
({run['hours']:g} h), {run['buses']} buses in {run['shards']} shards.</p>
<table>{rows}</table>
<h2>Revenue by payment path</h2>{revenue}
<h2>Tap latency by payment path</h2><p>{statement}</p>{latency}
<h2>Refusals</h2><p>Counted {html.escape(REFUSALS_COUNT)}.</p>{refused}
<h3>Deny-list additions (after a bank's refusal)</h3>{additions}
<h2>Uplink</h2><p>Outages and down time over {html.escape(up['period']['from'])}-{
html.escape(up['period']['to'])}, {html.escape(up['period']['counts'])}.
Backlog: {html.escape(up['backlog']['in_flight'])} (blue), and taps journaled on buses whose
link is down (red).</p>
<h2>Real code driven</h2><ul>{wired}</ul>
{imgs}
<h2>This machine</h2><p>{html.escape(report.get('wall', {}).get('note', ''))}</p>
<table>{machine}</table>
<p>All figures: <a href="report.json">report.json</a>.</p>
</body></html>
"""
