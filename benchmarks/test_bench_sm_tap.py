"""One full SM tap: kernel + in-process virtual card, SM2 fDDA, SM4 cryptogram (sscard3-sm).

No target is named for it (issue 3 asks for the median); the terminal side (the kernel's
work: three SM2 verifications, issuer and ICC certificates and the SDAD) and the card side
(its SM2 signature) are reported apart, as in test_bench_tap.py, with the RSA card of the
same make measured in the same run for comparison.
"""

from __future__ import annotations

import datetime as dt
import statistics
from typing import Any

from benchmarks.conftest import split_tap
from emv.card.card import VirtualCard
from emv.card.image import personalise
from emv.card.profile import load_profile
from emv.kernel import UNIONPAY_DEBIT, Kernel, Outcome, TerminalConfig, TransactionInput, run
from emv.oda import builtin_test_ca_keys

CONFIG = TerminalConfig(ca_keys=builtin_test_ca_keys(), token_key=b"bench-token-key-0123456789")
TODAY = dt.date(2026, 11, 23)


def _card(name: str) -> VirtualCard:
    return VirtualCard(personalise(load_profile(name)))


def _split_tap(card: VirtualCard, un: int) -> tuple[float, float, str]:
    """(terminal seconds, card seconds, ODA method) of one approved tap."""
    card.state.app(UNIONPAY_DEBIT).offline_spent = 0
    txn = TransactionInput(amount=200, date=TODAY, unpredictable_number=un.to_bytes(4, "big"))
    terminal, chip, result = split_tap(CONFIG, card, txn)
    assert result.outcome is Outcome.APPROVED_OFFLINE, result.reason
    return terminal, chip, result.oda


def test_full_sm_tap_kernel_and_card(benchmark: Any) -> None:
    card = _card("sscard3-sm")
    counter = iter(range(10**9))

    def tap() -> str:
        card.power_on()
        card.state.app(UNIONPAY_DEBIT).offline_spent = 0
        txn = TransactionInput(amount=200, date=TODAY,
                               unpredictable_number=next(counter).to_bytes(4, "big"))
        return run(Kernel(CONFIG, txn), card.process).oda

    benchmark.group = "sm-tap"
    assert benchmark(tap) == "fdda-sm2"


def test_sm_tap_split_against_rsa(benchmark: Any) -> None:
    """Medians over 300 taps of each card, interleaved so load on the shared cores hits both."""
    sm, rsa = _card("sscard3-sm"), _card("sscard3")
    figures: dict[str, list[tuple[float, float]]] = {"fdda-sm2": [], "fdda-rsa": []}
    for i in range(300):
        for card in (sm, rsa):
            terminal, chip, method = _split_tap(card, i)
            figures[method].append((terminal, chip))
    info = {}
    for method, pairs in figures.items():
        for side, index in (("terminal", 0), ("card", 1)):
            median = statistics.median(pair[index] for pair in pairs)
            info[f"{method}_{side}_median_ms"] = round(median * 1e3, 3)
    benchmark.extra_info.update(info)
    print("\n" + ", ".join(f"{k} {v}" for k, v in info.items()))
    benchmark.group = "sm-tap-split"
    benchmark.pedantic(lambda: _split_tap(sm, 0), rounds=20)
