"""The kernel on a transcript card against the kernel on the in-process virtual card, per tap,
in the same run (issue 13).

The transcript card answers from a recording (no card-side crypto: a dictionary walk), so its
figure is the kernel's own work plus the replay's matching; the virtual card's figure adds the
card's RSA signature and cryptogram.  The real Visa transcript shows a real card's cost: a
1984-bit CA key and Visa's fDDA.  Medians over interleaved taps (load on the shared cores hits
all alike), CPU time and wall clock both.
"""

from __future__ import annotations

import datetime as dt
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emv.capk import load_ca_keys
from emv.card.card import VirtualCard
from emv.card.image import personalise
from emv.card.profile import load_profile
from emv.card.transcript import Transcript, load_transcript, parse_transcript
from emv.kernel import (
    UNIONPAY_DEBIT,
    Exchange,
    Kernel,
    Outcome,
    TerminalConfig,
    TransactionInput,
    run,
)
from emv.oda import builtin_test_ca_keys

DATA = Path(__file__).parent.parent / "tests" / "data"
CONFIG = TerminalConfig(ca_keys=builtin_test_ca_keys(), token_key=b"bench-token-key-0123456789")
TODAY = dt.date(2026, 11, 23)
UN = bytes.fromhex("0A0B0C0D")


def _virtual() -> Callable[[], Outcome]:
    card = VirtualCard(personalise(load_profile("sscard3")))

    def tap() -> Outcome:
        card.power_on()
        card.state.app(UNIONPAY_DEBIT).offline_spent = 0
        txn = TransactionInput(amount=200, date=TODAY, unpredictable_number=UN)
        return run(Kernel(CONFIG, txn), card.process).outcome

    return tap


def _recorded() -> Transcript:
    card = VirtualCard(personalise(load_profile("sscard3")))
    card.power_on()
    trace: list[Exchange] = []
    run(Kernel(CONFIG, TransactionInput(amount=200, date=TODAY, unpredictable_number=UN)),
        card.process, trace)
    return Transcript(parse_transcript([{"c": e.command.hex(), "r": e.response.hex()}
                                        for e in trace]))


def _replay(transcript: Transcript, config: TerminalConfig) -> Callable[[], Outcome]:
    cfg, txn = transcript.replay_inputs(
        config, TransactionInput(amount=200, date=TODAY, unpredictable_number=bytes(4)))

    def tap() -> Outcome:
        transcript.power_on()
        return run(Kernel(cfg, txn), transcript.process).outcome

    return tap


def _visa() -> Callable[[], Outcome]:
    keys = load_ca_keys(DATA / "capk" / "proxmark3-capk-subset.txt")
    config = TerminalConfig(ca_keys=keys, token_key=CONFIG.token_key,
                            aid_priority=(bytes.fromhex("A0000000031010"),))
    return _replay(load_transcript(DATA / "transcripts" / "visa-dkb.json"), config)


def test_tap_on_transcript_card(benchmark: Any) -> None:
    benchmark.group = "transcript-vs-virtual"
    assert benchmark(_replay(_recorded(), CONFIG)) is Outcome.APPROVED_OFFLINE


def test_tap_on_virtual_card(benchmark: Any) -> None:
    benchmark.group = "transcript-vs-virtual"
    assert benchmark(_virtual()) is Outcome.APPROVED_OFFLINE


def test_tap_on_real_visa_transcript(benchmark: Any) -> None:
    benchmark.group = "transcript-vs-virtual"
    assert benchmark(_visa()) is Outcome.ONLINE_REQUEST


def test_per_tap_medians_same_run(benchmark: Any) -> None:
    taps = {"transcript": _replay(_recorded(), CONFIG), "virtual": _virtual(),
            "visa_transcript": _visa()}
    cpu: dict[str, list[float]] = {k: [] for k in taps}
    wall: dict[str, list[float]] = {k: [] for k in taps}
    for _ in range(300):
        for name, tap in taps.items():
            c0, w0 = time.process_time(), time.perf_counter()
            tap()
            cpu[name].append(time.process_time() - c0)
            wall[name].append(time.perf_counter() - w0)
    info: dict[str, float] = {}
    for name in taps:
        info[f"{name}_cpu_median_ms"] = round(statistics.median(cpu[name]) * 1e3, 3)
        info[f"{name}_wall_median_ms"] = round(statistics.median(wall[name]) * 1e3, 3)
    benchmark.extra_info.update(info)
    print("\n" + ", ".join(f"{k} {v}" for k, v in info.items()))
    benchmark.group = "transcript-vs-virtual-medians"
    benchmark.pedantic(taps["transcript"], rounds=20)
