"""Kill the back office with SIGKILL in the middle of a batch, restart it, and prove that
nothing was lost and nothing charged twice (on both backends)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from backoffice.engine import BackOffice
from backoffice.reports import memory_figures, reconcile
from backoffice.storage import SqlStore
from backoffice.taps import TapRecord, tap_to_mapping
from issuer.models import AuthKind
from issuer.service import Issuer
from tests.core_crash_child import SPEND_LIMIT, build
from tests.core_fixtures import (
    BACKENDS,
    MERCHANT,
    T0,
    TestCard,
    config,
    flat_pricer,
    make_store,
    new_issuer,
    open_card,
    pan_for,
)

ROOT = Path(__file__).resolve().parents[1]
BATCH = 25
CRASH_BATCH = 3
BALANCES = [10_000, 10_000, 500, 10_000, 0, 10_000, 1_000, 10_000]


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[SqlStore, str]]:
    yield from make_store(request.param, tmp_path)


def taps() -> list[TapRecord]:
    cards = [TestCard(pan_for(300 + i), "sm4" if i % 3 == 0 else "tdes") for i in range(8)]
    out = []
    for k in range(20):
        for i, tc in enumerate(cards):
            out.append(tc.tap(f"c{i}-{k:02d}", T0 + timedelta(minutes=30 * k + i)))
    return out


def setup_accounts(issuer: Issuer) -> None:
    for i, bal in enumerate(BALANCES):
        tc = TestCard(pan_for(300 + i), "sm4" if i % 3 == 0 else "tdes")
        open_card(issuer, tc, balance=bal)


def child(url: str, path: Path, crash_batch: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.core_crash_child", url, str(path), str(BATCH),
         str(crash_batch)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def reference() -> tuple[dict[str, int], dict[str, int], int]:
    """The same taps through the in-memory core, without any crash."""
    issuer = new_issuer()
    setup_accounts(issuer)
    bo = BackOffice(flat_pricer(), issuer, config(spend_limit=SPEND_LIMIT))
    records = [tap_to_mapping(t) for t in taps()]
    end = T0
    for start in range(0, len(records), BATCH):
        batch = taps()[start : start + BATCH]
        end = max(t.time for t in batch)
        bo.ingest(records[start : start + BATCH], end)
    bo.close_due(end + timedelta(days=1))
    assert reconcile(memory_figures(bo, issuer.captured_total(MERCHANT))).ok
    balances = {a.account_id: a.balance for a in issuer.accounts.values()}
    return balances, dict(bo.balances), issuer.captured_total(MERCHANT)


@pytest.mark.slow
def test_sigkill_mid_batch_loses_nothing_and_charges_nothing_twice(
    store_url: tuple[SqlStore, str], tmp_path: Path
) -> None:
    store, url = store_url
    setup = build(store)
    setup.run(lambda: setup_accounts(setup.issuer))
    path = tmp_path / "taps.jsonl"
    all_taps = taps()
    path.write_text("".join(json.dumps(tap_to_mapping(t)) + "\n" for t in all_taps))

    proc = child(url, path, CRASH_BATCH)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line.strip())
        if line.strip() == "MIDBATCH":
            break
    assert lines[-1] == "MIDBATCH", (lines, proc.stderr.read() if proc.stderr else "")
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert lines[:-1] == [f"committed {b}" for b in range(CRASH_BATCH)]

    # Exactly the committed batches are in the database: the torn batch left no trace.
    assert store.count("taps") == CRASH_BATCH * BATCH
    assert not store.bad_entries()

    proc = child(url, path, -1)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.strip().endswith("DONE")

    # Nothing lost, nothing twice.
    assert store.count("taps") == len(all_taps)
    captures = store.captures(MERCHANT)
    assert len({c.hold_id for c in captures}) == len(captures)
    assert all(c.capture_id == "cap:" + c.hold_id for c in captures)
    paid = [
        r for r in store.load_issuer().auths
        if r.code.approved and r.kind is not AuthKind.ACCOUNT_VERIFICATION
    ]  # fmt: skip
    assert sorted(c.hold_id for c in captures) == sorted(r.request_id for r in paid)
    recon = build(store).reconcile()
    assert recon.ok, recon.problems

    ref_balances, ref_ledger, ref_captured = reference()
    restarted = build(store)
    assert {a.account_id: a.balance for a in restarted.issuer.accounts.values()} == ref_balances
    assert restarted.core.balances == ref_ledger
    assert sum(c.amount for c in captures) == ref_captured
