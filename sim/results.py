"""What a shard measured, in a form that pickles and merges (sums of counts and histograms).

Distributions are kept as fixed-bin histograms so shards merge exactly by addition and the
percentiles of the merged run are those of all its taps (to the bin width).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

LATENCY_BIN = 0.0001  # s (0.1 ms)
LATENCY_BINS = 30_000  # up to 3 s
DWELL_BIN = 0.1  # s
DWELL_BINS = 6_000  # up to 600 s
WAIT_BIN = 0.0001
WAIT_BINS = 100_000  # up to 10 s

# How a tap was paid (or not), for the latency breakdown: an accepted QuickPass tap made while
# the bus's link was up (sent at once) or down (journaled), a tap paid from the T-Union
# e-purse at the gate, and a tap the validator refused (whatever the card).
QUICKPASS_ONLINE, QUICKPASS_OFFLINE, EPURSE, DECLINED = range(4)
PAYMENT_PATHS = ("quickpass_online", "quickpass_offline", "epurse", "declined_at_gate")


def _path_hists() -> dict[str, NDArray[np.int64]]:
    return {name: np.zeros(LATENCY_BINS, dtype=np.int64) for name in PAYMENT_PATHS}


def histogram(values: NDArray[np.float64], width: float, bins: int) -> NDArray[np.int64]:
    idx = np.minimum((values / width).astype(np.int64), bins - 1)
    return np.bincount(np.maximum(idx, 0), minlength=bins).astype(np.int64)


def quantile(hist: NDArray[np.int64], width: float, q: float) -> float:
    """The q-quantile of a histogram (upper edge of the bin holding it); 0 if empty."""
    total = int(hist.sum())
    if total == 0:
        return 0.0
    target = q * total
    i = int(np.searchsorted(np.cumsum(hist), target, side="left"))
    return (min(i, len(hist) - 1) + 1) * width


def hist_mean(hist: NDArray[np.int64], width: float) -> float:
    total = int(hist.sum())
    if total == 0:
        return 0.0
    mids = (np.arange(len(hist)) + 0.5) * width
    return float((hist * mids).sum() / total)


@dataclass
class ShardResult:
    shard: int
    buses: int = 0
    routes: list[str] = field(default_factory=list)
    cards: int = 0
    cards_seen: int = 0
    population: dict[str, dict[str, int]] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    gate_declines: Counter[str] = field(default_factory=Counter)
    issuer_declines: Counter[str] = field(default_factory=Counter)  # charges, by code
    deny_reasons: Counter[str] = field(default_factory=Counter)  # deny-list additions, by code
    core_events: Counter[str] = field(default_factory=Counter)
    alerts: Counter[str] = field(default_factory=Counter)
    latency_hist: NDArray[np.int64] = field(
        default_factory=lambda: np.zeros(LATENCY_BINS, dtype=np.int64))
    latency_by_path: dict[str, NDArray[np.int64]] = field(default_factory=_path_hists)
    dwell_hist: NDArray[np.int64] = field(
        default_factory=lambda: np.zeros(DWELL_BINS, dtype=np.int64))
    dwell_sum: float = 0.0
    dwell_unpaid_sum: float = 0.0  # the same stops' dwell if nobody had to pay
    served_stops: int = 0
    wait_hist: NDArray[np.int64] = field(
        default_factory=lambda: np.zeros(WAIT_BINS, dtype=np.int64))
    queue_busy: float = 0.0
    queue_messages: int = 0
    queue_max: int = 0
    servers: int = 0
    sim_seconds: float = 0.0
    backlog_t: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    backlog_journal: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    backlog_queue: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    propagation: list[tuple[float, float, float]] = field(default_factory=list)  # mean,p95,max
    money: Counter[str] = field(default_factory=Counter)  # fen
    # E-purse clearing (sim.model, "clearing"): "<home|other_city>:<cleared|pending|refused>"
    # in fen and the same with "_n" in records; "reason:<why>" refused records;
    # "position:<issuer>:<operator>" fen the issuer owes the operator for the day.
    clearing: Counter[str] = field(default_factory=Counter)
    link_outages: int = 0  # outages overlapping the service period
    link_down_seconds: float = 0.0  # bus-seconds of outage within the service period
    lateness_sum: float = 0.0  # s buses ended their trips behind schedule, summed
    trips: int = 0
    wall: dict[str, float] = field(default_factory=dict)  # wall-clock seconds, by phase
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds (the shard's thread)
    calibration: dict[str, Any] = field(default_factory=dict)

    @property
    def taps(self) -> int:
        return int(self.counts["taps"])


def merge(parts: list[ShardResult]) -> ShardResult:
    """One result for the whole city (shards in order)."""
    out = ShardResult(shard=-1)
    out.backlog_t = parts[0].backlog_t.copy() if parts else np.zeros(0)
    out.backlog_journal = np.zeros(len(out.backlog_t), dtype=np.int64)
    out.backlog_queue = np.zeros(len(out.backlog_t), dtype=np.int64)
    for p in parts:
        out.buses += p.buses
        out.routes += p.routes
        out.cards += p.cards
        out.cards_seen += p.cards_seen
        for key, table in p.population.items():
            dst = out.population.setdefault(key, {})
            for k, count in table.items():
                dst[k] = dst.get(k, 0) + count
        for name in ("counts", "gate_declines", "issuer_declines", "deny_reasons", "core_events",
                     "alerts", "money", "clearing"):
            getattr(out, name).update(getattr(p, name))
        out.latency_hist += p.latency_hist
        for name, hist in p.latency_by_path.items():
            out.latency_by_path[name] += hist
        out.dwell_hist += p.dwell_hist
        out.wait_hist += p.wait_hist
        out.dwell_sum += p.dwell_sum
        out.dwell_unpaid_sum += p.dwell_unpaid_sum
        out.served_stops += p.served_stops
        out.queue_busy += p.queue_busy
        out.queue_messages += p.queue_messages
        out.queue_max = max(out.queue_max, p.queue_max)
        out.servers += p.servers
        out.sim_seconds = max(out.sim_seconds, p.sim_seconds)
        n = min(len(out.backlog_t), len(p.backlog_t))
        out.backlog_journal[:n] += p.backlog_journal[:n]
        out.backlog_queue[:n] += p.backlog_queue[:n]
        out.propagation += p.propagation
        out.link_outages += p.link_outages
        out.link_down_seconds += p.link_down_seconds
        out.lateness_sum += p.lateness_sum
        out.trips += p.trips
        for k, v in p.wall.items():
            out.wall[k] = out.wall.get(k, 0.0) + v
        for k, v in p.cpu.items():
            out.cpu[k] = out.cpu.get(k, 0.0) + v
        if not out.calibration:
            out.calibration = p.calibration
    return out
