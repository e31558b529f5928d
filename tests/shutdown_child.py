"""Runs one tapsim command N times in this process and SIGTERMs (or SIGINTs) each run at a
random moment; prints one JSON line: the seconds from each signal to the command's return.

``python -m tests.shutdown_child N SIGNAL -- tapsim arguments...``

One process for all N runs, so the loop costs the command's start, not Python's and the
imports'.  The signal goes to this process, exactly as ``kill`` would send it; it is sent
only once the command's asyncio loop handles it (before that, SIGTERM's default would end
the process, which is not what is under test).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import threading
import time

from tapsim.cli import main


def _handled(sig: signal.Signals) -> bool:
    """The command's event loop handles ``sig`` (loop.add_signal_handler installs this
    no-op at the C level; asyncio.run's own SIGINT handler, before it, is not enough)."""
    return getattr(signal.getsignal(sig), "__name__", "") == "_sighandler_noop"


def run_once(args: list[str], sig: signal.Signals, rng: random.Random) -> float:
    sent = [0.0]

    def shoot() -> None:
        while not _handled(sig):
            time.sleep(0.005)
        time.sleep(rng.uniform(0.02, 0.5))
        sent[0] = time.monotonic()
        os.kill(os.getpid(), sig)

    shooter = threading.Thread(target=shoot, daemon=True)
    shooter.start()
    code = main(args)
    ended = time.monotonic()
    shooter.join(5)
    if code != 0:
        raise SystemExit(f"run ended with {code}")
    if not sent[0]:
        raise SystemExit("the command ended before the signal")
    signal.signal(sig, signal.SIG_DFL if sig == signal.SIGTERM else signal.default_int_handler)
    return ended - sent[0]


def main_(argv: list[str]) -> None:
    n, sig = int(argv[0]), signal.Signals[argv[1]]
    args = argv[argv.index("--") + 1:]
    rng = random.Random(int(os.environ.get("SHUTDOWN_SEED", "12")))
    times = [run_once(args, sig, rng) for _ in range(n)]
    print(json.dumps(times), flush=True)


if __name__ == "__main__":
    main_(sys.argv[1:])
