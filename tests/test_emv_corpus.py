"""The kernel against recorded real cards (tests/data/transcripts, sources in its README): every
transcript reaches its expected outcome; every recorded response decodes."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest

from emv import tlv
from emv.apdu import ResponseApdu
from emv.capk import load_ca_keys
from emv.card.transcript import load_transcript, parse_transcript
from emv.describe import response_lines
from emv.kernel import Kernel, Send, TerminalConfig, TransactionInput
from emv.oda import builtin_test_ca_keys
from tapsim.commands.tap import transcript_tap
from tapsim.errors import UserError

DATA = Path(__file__).parent / "data"
TRANSCRIPTS = DATA / "transcripts"
EXPECTED: dict[str, dict[str, Any]] = json.loads((TRANSCRIPTS / "expected.json").read_text())
REAL_CA = DATA / "capk" / "proxmark3-capk-subset.txt"
UNIONPAY = DATA / "responses" / "unionpay-pboc-debit.json"


def test_every_transcript_has_an_expected_outcome() -> None:
    assert sorted(EXPECTED) == sorted(p.name for p in TRANSCRIPTS.glob("*.json")
                                      if p.name != "expected.json")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_transcript_reaches_its_expected_outcome(name: str) -> None:
    expected = dict(EXPECTED[name])
    day = dt.date.fromisoformat(expected.pop("date")) if "date" in expected else dt.date.today()
    if "error" in expected:  # the recording lacks what this kernel sends: a clear failure
        with pytest.raises(UserError, match=re.escape(expected["error"])):
            transcript_tap(TRANSCRIPTS / name, day, 100, ca_keys=load_ca_keys(REAL_CA))
        return
    result = transcript_tap(TRANSCRIPTS / name, day, 100, ca_keys=load_ca_keys(REAL_CA))
    got = {k: (v.value if hasattr(v, "value") else v) for k, v in vars(result).items()}
    assert {k: got[k] for k in expected} == expected, got.get("reason")


def test_the_visa_taps_need_the_real_visa_ca_key() -> None:
    """With only the shipped test CA, the same real cards fail ODA: the check is real."""
    result = transcript_tap(TRANSCRIPTS / "visa-dkb.json", dt.date.today(), 100,
                            ca_keys=builtin_test_ca_keys())
    assert result.outcome.value == "declined" and result.reason == "oda-failed: unknown-ca"


def responses() -> list[tuple[str, int, bytes]]:
    out = []
    for path in [*sorted(TRANSCRIPTS.glob("*.json")), UNIONPAY]:
        if path.name == "expected.json":
            continue
        for i, ex in enumerate(load_transcript(path).exchanges):
            out.append((path.name, i, ex.response))
    return out


def test_every_recorded_response_decodes() -> None:
    seen = 0
    for name, i, raw in responses():
        r = ResponseApdu.parse(raw)
        if not r.data:
            continue
        nodes = tlv.decode(r.data)
        assert tlv.encode([(n.tag, n.value) for n in nodes]) == r.data, (name, i)
        assert not any("not TLV" in line for line in response_lines(raw)), (name, i)
        seen += 1
    assert seen >= 50


def test_the_kernel_fills_a_real_unionpay_pdol() -> None:
    """The real PBOC DEBIT card's PPSE and SELECT answers: the kernel picks its AID and sends GPO
    with every PDOL object, TTQ first and DF69 (SM supported) last."""
    ppse, aid = parse_transcript(json.loads(UNIONPAY.read_text()))
    cfg = TerminalConfig(ca_keys=builtin_test_ca_keys(), token_key=b"k" * 32)
    kernel = Kernel(cfg, TransactionInput(amount=200, date=dt.date(2026, 11, 23),
                                          unpredictable_number=bytes.fromhex("11223344")))
    assert kernel.start() == Send(ppse.raw_command)
    step = kernel.receive(ppse.response)
    assert step == Send(aid.raw_command)
    gpo = kernel.receive(aid.response)
    assert isinstance(gpo, Send) and gpo.apdu[:2] == bytes.fromhex("80A8")
    data = tlv.decode(gpo.apdu[5:-1])[0].value
    # 9F66 4, 9F02 6, 9F03 6, 9F1A 2, 95 5, 5F2A 2, 9A 3, 9C 1, 9F37 4, DF60 1, DF69 1
    assert len(data) == 35
    assert data[:4] == cfg.ttq and data[29:33] == bytes.fromhex("11223344")
    assert data[-1:] == b"\x01"
