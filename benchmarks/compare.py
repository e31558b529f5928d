"""Compare two pytest-benchmark JSON runs of the same machine: the ratio per benchmark.

``./dev bench`` keeps every run under ``.benchmarks/<machine>/`` and calls this with the previous
run and the new one.  It prints, per benchmark present in both, the median before and now and
their ratio (now / before: above 1 is slower), and exits 1 when any median grew by more than the
threshold (default 25 %, ``TAPSIM_BENCH_THRESHOLD`` in percent).  The threshold is wide on
purpose: on a 2-core machine the same code varies by 10-15 % between runs; the absolute targets
are asserted by the benchmarks themselves, this guards against a change making things slower.

Medians are what the benchmarks report (each benchmark chooses its timer; CPU time where the
issue asks for it), so both runs are timed the same way.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

DEFAULT_THRESHOLD_PCT = 25.0


def medians(path: Path) -> dict[str, float]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return {b["fullname"]: float(b["stats"]["median"]) for b in data.get("benchmarks", [])}


def compare(before: dict[str, float], now: dict[str, float],
            threshold_pct: float) -> tuple[list[str], list[str]]:
    """Table lines and the names of the regressions beyond the threshold."""
    lines = [f"{'benchmark':<72} {'before':>11} {'now':>11} {'ratio':>7}"]
    slower: list[str] = []
    for name in sorted(before.keys() & now.keys()):
        old, new = before[name], now[name]
        ratio = new / old if old > 0 else float("inf")
        mark = ""
        if ratio > 1 + threshold_pct / 100:
            slower.append(name)
            mark = "  SLOWER"
        short = name.removeprefix("benchmarks/")
        lines.append(f"{short[:72]:<72} {_fmt(old):>11} {_fmt(new):>11} {ratio:>7.2f}{mark}")
    for name in sorted(now.keys() - before.keys()):
        short = name.removeprefix("benchmarks/")
        lines.append(f"{short[:72]:<72} {'(new)':>11} {_fmt(now[name]):>11}")
    return lines, slower


def _fmt(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3f} ms"
    return f"{seconds * 1e6:.2f} us"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: compare.py PREVIOUS.json CURRENT.json", file=sys.stderr)
        return 2
    threshold = float(os.environ.get("TAPSIM_BENCH_THRESHOLD", DEFAULT_THRESHOLD_PCT))
    previous, current = Path(argv[0]), Path(argv[1])
    lines, slower = compare(medians(previous), medians(current), threshold)
    print(f"\nmedians against the previous run on this machine ({previous.name}):")
    print("\n".join(lines))
    if slower:
        print(f"\n{len(slower)} benchmark(s) slower than the previous run by more than "
              f"{threshold:g} %: {', '.join(s.rsplit('::', 1)[-1] for s in slower)}")
        return 1
    print(f"\nno benchmark slower than the previous run by more than {threshold:g} %")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
