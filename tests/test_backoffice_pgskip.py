"""Where PostgreSQL is not running, its tests skip with a loud reason — and fail under CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TARGET = "tests/test_backoffice_storage.py::test_open_aggregates_resume_after_restart[postgresql]"


def _pytest(ci: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["TAPSIM_PG_URL"] = "postgresql://127.0.0.1:1/test?connect_timeout=2"
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", TARGET],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.slow
def test_unreachable_postgres_skips_loudly() -> None:
    run = _pytest(None)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 skipped" in run.stdout
    assert "PostgreSQL tests NOT run" in run.stdout + run.stderr


@pytest.mark.slow
def test_unreachable_postgres_fails_under_ci() -> None:
    run = _pytest("true")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "CI=true requires PostgreSQL" in run.stdout
