"""SM end to end: the SM social security card, SM2 fDDA, mixed fleets, readers without SM."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emv import tlv
from emv.appdata import ALGORITHM_SM4, CVN_SM4, IssuerApplicationData, ac_input
from emv.card.card import VirtualCard
from emv.card.image import personalise
from emv.card.profile import load_profile
from emv.crypto.cryptogram import scheme
from emv.crypto.sm2_certs import (
    recover_sm2_icc_key,
    recover_sm2_issuer_key,
    sm2_verify_dynamic_data,
)
from emv.crypto.testkeys_sm2 import SM2_TEST_CA_INDEX, SM2_TEST_CA_RID, sm2_test_ca
from emv.kernel import (
    UNIONPAY_DEBIT,
    Exchange,
    Finished,
    Kernel,
    Outcome,
    TapResult,
    TerminalConfig,
    TransactionInput,
    run,
)
from emv.oda import CaKeys, OdaFailure, builtin_test_ca_keys, is_sm2_card, verify_fdda
from tapsim.cli import main

TOKEN_KEY = b"tapsim-test-token-key-0000000000"
TODAY = dt.date(2026, 11, 23)
UN = bytes.fromhex("0A1B2C3D")
SM_PAN = "6231900000000000022"


def config(**kw: Any) -> TerminalConfig:
    kw.setdefault("ca_keys", builtin_test_ca_keys())
    return TerminalConfig(token_key=TOKEN_KEY, **kw)


def new_card(name: str = "sscard3-sm") -> VirtualCard:
    return VirtualCard(personalise(load_profile(name)))


def tap(card: VirtualCard, cfg: TerminalConfig | None = None, amount: int = 200,
        transceive: Callable[[bytes], bytes] | None = None,
        trace: list[Exchange] | None = None) -> TapResult:
    card.power_on()
    txn = TransactionInput(amount=amount, date=TODAY, unpredictable_number=UN)
    return run(Kernel(cfg or config(), txn), transceive or card.process, trace)


def card_objects(trace: list[Exchange]) -> dict[int, bytes]:
    """Everything the card sent in templates during a tap, by tag (first occurrence wins)."""
    objects: dict[int, bytes] = {}
    for exchange in trace:
        if exchange.response[-2:] == b"\x90\x00":
            for tag, value in tlv.flatten(tlv.decode(exchange.response[:-2])).items():
                objects.setdefault(tag, value)
    return objects


def test_sm_card_approved_offline_with_sm2_fdda() -> None:
    trace: list[Exchange] = []
    result = tap(new_card(), trace=trace)
    assert result.outcome is Outcome.APPROVED_OFFLINE, result.reason
    assert result.oda == "fdda-sm2" and result.oda_ok is True
    assert result.aid == UNIONPAY_DEBIT.hex().upper() and result.atc == 1
    assert result.pan_masked == "623190*********0022"
    assert result.holder_category == "senior"
    objects = card_objects(trace)
    assert objects[0x8F] == bytes((SM2_TEST_CA_INDEX,))
    assert objects[0x90][0] == 0x12 and objects[0x9F46][0] == 0x14 and objects[0x9F4B][0] == 0x15
    assert 0x9F32 not in objects and 0x9F47 not in objects  # SM2 certificates carry no exponent


def test_sm2_chain_checks_out_independently_of_the_kernel() -> None:
    """Redo the kernel's fDDA by hand from the exchanged bytes and the test CA key."""
    trace: list[Exchange] = []
    result = tap(new_card(), trace=trace)
    objects = card_objects(trace)
    issuer = recover_sm2_issuer_key(sm2_test_ca().public_key, objects[0x90], pan=SM_PAN,
                                    today=TODAY)
    # Static data: the value of the one record the AFL marks for ODA, then the AIP (9F4A = 82).
    signed_record = next(tlv.decode(e.response[:-2])[0].value for e in trace
                         if e.command[:4] == bytes.fromhex("00B20114"))
    icc = recover_sm2_icc_key(issuer, objects[0x9F46], pan=SM_PAN,
                              static_data=signed_record + objects[0x82], today=TODAY)
    ddol = UN + bytes.fromhex("000000000200") + bytes.fromhex("0156") + objects[0x9F69]
    dynamic = sm2_verify_dynamic_data(icc, objects[0x9F4B], ddol)
    assert dynamic == b"\x02" + (result.atc or 0).to_bytes(2, "big")


def test_sm_card_cryptogram_is_sm4_with_the_sm_iad() -> None:
    result = tap(new_card())
    assert result.iad and result.cryptogram and result.atc is not None
    iad = IssuerApplicationData.parse(bytes.fromhex(result.iad))
    assert (iad.cvn, iad.algorithm) == (CVN_SM4, ALGORITHM_SM4)
    sm4 = scheme("sm4")
    card_key = sm4.derive_card_key(bytes.fromhex("0123456789ABCDEFFEDCBA9876543210"), SM_PAN, "01")
    terminal = b"".join(bytes.fromhex(result.ac_data[t]) for t in
                        ("9F02", "9F03", "9F1A", "95", "5F2A", "9A", "9C", "9F37"))
    data = ac_input(terminal, bytes.fromhex("2000"), result.atc, iad.cvr)
    expected = sm4.generate_ac(sm4.derive_session_key(card_key, result.atc), data)
    assert expected.hex().upper() == result.cryptogram


def test_mixed_fleet_on_one_terminal_configuration() -> None:
    cfg = config()
    fleet = {name: new_card(name) for name in ("sscard3", "sscard3-sm", "unionpay-debit")}
    expected = {"sscard3": "fdda-rsa", "sscard3-sm": "fdda-sm2", "unionpay-debit": "fdda-rsa"}
    for round_ in range(3):
        for name, card in fleet.items():
            result = tap(card, cfg)
            assert result.outcome is Outcome.APPROVED_OFFLINE, (name, result.reason)
            assert (result.oda, result.oda_ok) == (expected[name], True)
            assert result.atc == round_ + 1


def test_sm_only_card_on_a_terminal_without_sm() -> None:
    card = new_card()
    trace: list[Exchange] = []
    result = tap(card, config(sm_supported=False), trace=trace)
    # The card refuses GPO (6985) when DF69 = 00; no other application the terminal takes.
    assert result.outcome is Outcome.TRY_ANOTHER_INTERFACE
    assert result.reason == "no-application-accepted"
    assert trace[2].command[:2] == bytes.fromhex("80A8") and trace[2].response == b"\x69\x85"
    assert card.state.app(UNIONPAY_DEBIT).atc == 0  # nothing counted
    # The same card on an SM terminal right after: approved, first ATC.
    assert tap(card).atc == 1


def test_rsa_card_on_a_terminal_without_sm_still_works() -> None:
    result = tap(new_card("sscard3"), config(sm_supported=False))
    assert result.outcome is Outcome.APPROVED_OFFLINE and result.oda == "fdda-rsa"


def test_terminal_without_the_sm2_ca_key_fails_oda() -> None:
    rsa_only = CaKeys(rsa=builtin_test_ca_keys().rsa)
    result = tap(new_card(), config(ca_keys=rsa_only))
    assert result.outcome is Outcome.DECLINED
    assert result.reason == "oda-failed: unknown-ca" and result.oda == "fdda-sm2"
    assert result.tvr[:2] == "08"


def _tamper(card: VirtualCard, ins: int, tag: int, edit: Callable[[bytes], bytes],
            record: int | None = None) -> Callable[[bytes], bytes]:
    """The card, with one data object of one answer edited (and the template re-encoded)."""
    def transceive(apdu: bytes) -> bytes:
        response = card.process(apdu)
        if apdu[1] != ins or (record is not None and apdu[2:4] != record.to_bytes(2, "big")):
            return response
        top = tlv.decode(response[:-2])[0]
        children = [(c.tag, edit(c.value) if c.tag == tag else c.value)
                    for c in top.children or ()]
        return tlv.encode([(top.tag, children)]) + response[-2:]
    return transceive


def _flip(at: int) -> Callable[[bytes], bytes]:
    def edit(value: bytes) -> bytes:
        raw = bytearray(value)
        raw[at] ^= 0x01
        return bytes(raw)
    return edit


@pytest.mark.parametrize(("ins", "tag", "at", "record", "reason"), [
    (0xA8, 0x9F4B, 20, None, "bad-signature"),          # SDAD signature
    (0xA8, 0x9F4B, 0, None, "bad-format"),              # SDAD format byte 15 -> 14
    (0xB2, 0x90, 30, 0x0214, "bad-signature"),          # issuer certificate: its key
    (0xB2, 0x9F46, 5, 0x0314, "bad-signature"),         # ICC certificate: its PAN field
    (0xB2, 0x5F24, 1, 0x0114, "bad-signature"),         # static data (expiry) after signing
])
def test_tampered_sm2_data_fails_oda(ins: int, tag: int, at: int, record: int | None,
                                     reason: str) -> None:
    card = new_card()
    result = tap(card, transceive=_tamper(card, ins, tag, _flip(at), record))
    assert result.outcome is Outcome.DECLINED
    assert result.reason == f"oda-failed: {reason}" and result.oda == "fdda-sm2"
    assert result.oda_ok is False


def test_sdad_over_another_atc_fails_oda() -> None:
    card = new_card()
    result = tap(card, transceive=_tamper(card, 0xA8, 0x9F36, lambda atc: b"\x7f\xff"))
    assert result.outcome is Outcome.DECLINED
    assert result.reason == "oda-failed: dynamic-number-mismatch"


def test_suite_is_read_from_the_card_data() -> None:
    sm_like = {0x90: b"\x12" + bytes(141), 0x8F: b"\xf2", 0x9F46: b"\x14" + bytes(147)}
    assert is_sm2_card(sm_like)
    # An RSA certificate that happens to start with 12 still comes with its exponent.
    assert not is_sm2_card({**sm_like, 0x9F32: b"\x03"})
    with pytest.raises(OdaFailure) as refused:
        verify_fdda(builtin_test_ca_keys(), SM2_TEST_CA_RID, {**sm_like, 0x5A: b"\x62"},
                    b"", b"", TODAY, sm_allowed=False)
    assert (refused.value.method, refused.value.reason) == ("fdda-sm2", "sm2-not-supported")


def test_builtin_ca_keys_hold_both_suites() -> None:
    keys = builtin_test_ca_keys()
    assert keys.sm2[(SM2_TEST_CA_RID, SM2_TEST_CA_INDEX)] == sm2_test_ca().public_key
    assert keys.rsa.find(SM2_TEST_CA_RID, 0xF1) is not None


def test_cli_reports_fdda_sm2(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["tap", "--card", "sscard3-sm", "--json", "--fresh", "--date", "2026-11-23"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["oda"] == "fdda-sm2" and out["oda_ok"] is True
    assert out["outcome"] == "approved-offline"
    code = main(["tap", "--card", "sscard3-sm", "--json", "--fresh", "--no-sm"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and out["outcome"] == "try-another-interface"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 8), st.integers(0, 400), st.integers(0, 255))
def test_garbled_sm_answers_end_in_a_defined_outcome(step: int, at: int, xor: int) -> None:
    """Any byte of any answer changed: the kernel ends with an outcome, never an exception."""
    card = new_card()
    card.power_on()
    seen = [0]

    def transceive(apdu: bytes) -> bytes:
        response = card.process(apdu)
        seen[0] += 1
        if seen[0] - 1 == step and response:
            raw = bytearray(response)
            raw[at % len(raw)] ^= xor
            response = bytes(raw)
        return response

    kernel = Kernel(config(), TransactionInput(amount=200, date=TODAY, unpredictable_number=UN))
    result = kernel.start()
    for _ in range(40):
        if isinstance(result, Finished):
            break
        result = kernel.receive(transceive(result.apdu))
    assert isinstance(result, Finished)
    outcome = result.result
    assert outcome.outcome in set(Outcome)
    if outcome.outcome is Outcome.APPROVED_OFFLINE:
        assert outcome.oda_ok is True  # nothing garbled gets through ODA


def test_cached_issuer_check_still_refuses_what_it_should() -> None:
    """The issuer key is cached per (CA, certificate, issuer digits, day): never a failure."""
    trace: list[Exchange] = []
    assert tap(new_card(), trace=trace).oda_ok is True  # the genuine chain, now cached
    card = card_objects(trace)
    signed_record = next(tlv.decode(e.response[:-2])[0].value for e in trace
                         if e.command[:4] == bytes.fromhex("00B20114"))
    static = signed_record + card[0x82]
    ddol = UN + bytes.fromhex("000000000200") + bytes.fromhex("0156") + card[0x9F69]
    rid, keys = SM2_TEST_CA_RID, builtin_test_ca_keys()
    assert verify_fdda(keys, rid, card, static, ddol, TODAY, sm_allowed=True) == "fdda-sm2"
    other_issuer = {**card, 0x5A: bytes.fromhex("6228480000000000018F")}
    late = dt.date(2034, 1, 1)  # after the issuer certificate's expiry (card expiry + 2 years)
    for data, day, reason in ((other_issuer, TODAY, "pan-mismatch"), (card, late, "expired")):
        with pytest.raises(OdaFailure) as failed:
            verify_fdda(keys, rid, data, static, ddol, day, sm_allowed=True)
        assert failed.value.reason == reason
