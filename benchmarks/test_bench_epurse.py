"""One T-Union e-purse purchase through the kernel: SELECT PPSE, SELECT, INITIALIZE, DEBIT,
with the PSAM's MAC1/MAC2 (3DES and SM4 cards).  No target is named (issue 3: report it)."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from emv.card.card import VirtualCard
from emv.card.image import personalise
from emv.card.profile import load_profile
from emv.epurse.psam import Psam
from emv.kernel import (
    EPURSE_FIRST,
    T_UNION_EPURSE,
    Kernel,
    Outcome,
    TerminalConfig,
    TransactionInput,
    run,
)
from emv.oda import builtin_test_ca_keys

CONFIG = TerminalConfig(ca_keys=builtin_test_ca_keys(), token_key=b"bench-token-key-0123456789",
                        aid_priority=EPURSE_FIRST)
AT = dt.datetime(2026, 11, 23, 8, 0, tzinfo=ZoneInfo("Asia/Shanghai"))


@pytest.mark.parametrize("name", ["sscard3", "sscard3-sm"])
def test_epurse_purchase(benchmark: Any, name: str) -> None:
    card = VirtualCard(personalise(load_profile(name)))
    psam = Psam.test()
    state = card.state.app(T_UNION_EPURSE)
    txn = TransactionInput(amount=200, date=AT.date(), unpredictable_number=b"\x00\x00\x00\x01",
                           at=AT)

    def purchase() -> Outcome:
        state.balance = 3000  # top the purse up so every round pays
        card.power_on()
        return run(Kernel(CONFIG, txn, psam), card.process).outcome

    benchmark.group = "epurse-purchase"
    assert benchmark(purchase) is Outcome.APPROVED_OFFLINE
    benchmark.extra_info["algorithm"] = "sm4" if name.endswith("-sm") else "tdes"
