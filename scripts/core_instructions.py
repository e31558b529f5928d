"""Instructions a tap the transaction core executes on benchmarks/test_bench_core.py's city week.

CPU time on a shared machine moves by 10-30 % from one run to the next; the number of
instructions does not.  This runs one in-memory round of the ``mtt_week_city`` workload under
``valgrind --tool=callgrind``, counting only inside ``BackOffice.ingest`` and ``close_due`` (the
compiled core's C functions), and prints instructions per tap.  A way to judge a change to the
core's hot path, not a benchmark: the targets are held by benchmarks/test_bench_core.py.

    .venv/bin/python scripts/core_instructions.py fare   # the real fare engine
    .venv/bin/python scripts/core_instructions.py flat   # the flat-fare baseline

About a minute each (the workload is built once outside valgrind and kept in the system's
temporary directory).  Needs valgrind and the compiled core (``./dev setup``).
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(tempfile.gettempdir()) / "tapsim-core-instructions-workload.pkl"
ENTRY_POINTS = ("CPyDef_backoffice___engine___BackOffice___ingest",
                "CPyDef_backoffice___engine___BackOffice___close_due")


def _workload() -> object:
    sys.path.insert(0, str(ROOT))
    import benchmarks.test_bench_core as bench  # noqa: PLC0415 - only here

    if CACHE.exists():
        return pickle.loads(CACHE.read_bytes())  # noqa: S301 - our own file, made below
    w = bench.workload("mtt_week_city")
    CACHE.write_bytes(pickle.dumps(w))
    return w


def run_round(kind: str) -> None:
    """One round, as the benchmark runs it (what valgrind counts)."""
    import benchmarks.test_bench_core as bench  # noqa: PLC0415 - after _workload's path

    w = _workload()
    core = bench._fresh_core(w, bench.fare_pricer if kind == "fare" else bench.flat_city_pricer)
    bench._settle_heap()
    bench.run_memory(core, w.batches(), w.end)


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--round":
        run_round(argv[1])
        return 0
    if len(argv) != 1 or argv[0] not in ("fare", "flat"):
        print(__doc__.split("\n\n")[2], file=sys.stderr)
        return 2
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print("core_instructions: valgrind is not installed", file=sys.stderr)
        return 2
    taps = len(_workload().taps)  # type: ignore[attr-defined]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        toggles = [f"--toggle-collect={name}" for name in ENTRY_POINTS]
        subprocess.run(  # noqa: S603 - our own script and fixed arguments
            [valgrind, "--tool=callgrind", f"--callgrind-out-file={out}",
             "--collect-atstart=no", *toggles, sys.executable, __file__, "--round", argv[0]],
            check=True, capture_output=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        totals = next(line for line in out.read_text().splitlines()
                      if line.startswith(("summary:", "totals:")))  # fmt: skip
    print(f"{argv[0]}: {int(totals.split()[1]) / taps:,.0f} instructions a tap "
          f"({taps:,} taps, inside BackOffice.ingest and close_due)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
