"""Build hook: compile the hot, pure modules with mypyc (part of mypy).

The TLV decoder runs on every byte a card returns; compiled by mypyc it is about
3x faster than the same code interpreted (see benchmarks/test_bench_tlv.py).  The
fare engine and the transaction core's per-tap path (backoffice engine, records,
decisions, fare pricer) run for every tap the core ingests; compiled they are about
twice as fast (benchmarks/test_bench_core.py, test_bench_fare.py).  The modules stay
plain, typed Python: with ``TAPSIM_PURE_PYTHON=1``, or where no C compiler is found,
the package installs uncompiled and behaves the same, only slower.  An editable
install keeps the compiled modules beside the sources, where they shadow them: after
editing one, install again (``./dev`` does when a file listed here changes).
Everything else about the package is in pyproject.toml.
"""

from __future__ import annotations

import os
import shutil
import sys

from mypyc.build import mypycify
from setuptools import setup

# Read by ./dev as well (the quoted .py paths), to reinstall when one of them changes.
COMPILED = [
    "emv/tlv.py",
    "fare/engine.py", "fare/index.py", "fare/transfers.py", "fare/legs.py", "fare/caps.py",
    "fare/clock.py", "fare/match.py", "fare/values.py", "fare/explain.py", "fare/compare.py",
    "backoffice/engine.py", "backoffice/records.py", "backoffice/decisions.py",
    "backoffice/fare_pricer.py", "backoffice/outcomes.py", "backoffice/horizon.py",
    "backoffice/restore.py", "backoffice/recovery.py", "backoffice/changes.py",
]


def _ext_modules() -> list[object]:
    if os.environ.get("TAPSIM_PURE_PYTHON") == "1":
        return []
    if shutil.which(os.environ.get("CC", "cc")) is None and shutil.which("gcc") is None:
        print("tapsim: no C compiler found; installing pure Python (slower)", file=sys.stderr)
        return []
    return list(mypycify(COMPILED, opt_level="3"))


setup(ext_modules=_ext_modules())
