"""The kernel against the virtual card: outcomes, cryptograms, ODA, and hostile answers."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyemv import kd

from emv import tlv
from emv.appdata import IssuerApplicationData, ac_input
from emv.card.card import VirtualCard
from emv.card.image import personalise
from emv.card.profile import load_profile
from emv.crypto.cryptogram import scheme
from emv.kernel import (
    UNIONPAY_DEBIT,
    Exchange,
    Finished,
    Kernel,
    Outcome,
    Send,
    TapResult,
    TerminalConfig,
    TransactionInput,
    run,
)
from emv.oda import CaKeys, builtin_test_ca_keys
from emv.pan import pan_token

TOKEN_KEY = b"tapsim-test-token-key-0000000000"
TODAY = dt.date(2026, 11, 23)
UN = bytes.fromhex("A1B2C3D4")


def config(**kw: Any) -> TerminalConfig:
    kw.setdefault("ca_keys", builtin_test_ca_keys())
    return TerminalConfig(token_key=TOKEN_KEY, **kw)


def tap(card: VirtualCard, amount: int = 200, date: dt.date = TODAY,
        cfg: TerminalConfig | None = None, trace: list[Exchange] | None = None) -> TapResult:
    card.power_on()
    txn = TransactionInput(amount=amount, date=date, unpredictable_number=UN)
    return run(Kernel(cfg or config(), txn), card.process, trace)


def new_card(name: str = "sscard3") -> VirtualCard:
    return VirtualCard(personalise(load_profile(name)))


def test_social_security_card_approved_offline_with_rsa_fdda() -> None:
    card = new_card()
    trace: list[Exchange] = []
    result = tap(card, trace=trace)
    assert result.outcome is Outcome.APPROVED_OFFLINE, result.reason
    assert result.oda == "fdda-rsa" and result.oda_ok is True
    assert result.aid == "A000000333010101"
    assert result.atc == 1
    assert result.pan_masked == "623190*********0014"
    assert result.pan_token == pan_token("6231900000000000014", TOKEN_KEY)
    assert result.holder_category == "senior" and result.holder_birth_date == "19550601"
    # SELECT PPSE, SELECT AID, GPO, then the five records of the AFL.
    assert len(trace) == 8


def test_cryptogram_verifies_independently_with_pyemv() -> None:
    """Recompute the ARQC/TC from the issuer master key with pyemv directly."""
    result = tap(new_card(), amount=200)
    assert result.cryptogram and result.iad and result.atc is not None
    icc_mk = kd.derive_icc_mk_a(bytes.fromhex("0123456789ABCDEFFEDCBA9876543210"),
                                "6231900000000000014", "01")
    atc = result.atc.to_bytes(2, "big")
    sk = kd.derive_common_sk(icc_mk, atc + b"\xf0\x00\x00\x00\x00\x00")
    iad = IssuerApplicationData.parse(bytes.fromhex(result.iad))
    terminal = b"".join(bytes.fromhex(result.ac_data[t]) for t in
                        ("9F02", "9F03", "9F1A", "95", "5F2A", "9A", "9C", "9F37"))
    data = ac_input(terminal, bytes.fromhex("2000"), result.atc, iad.cvr)
    tdes = scheme("tdes")
    assert tdes.generate_ac(sk, data).hex().upper() == result.cryptogram


def test_atc_increments_and_persists_in_state() -> None:
    card = new_card()
    assert [tap(card).atc for _ in range(3)] == [1, 2, 3]
    again = VirtualCard(card.image, card.state)
    assert tap(again).atc == 4


def test_over_offline_limit_goes_online() -> None:
    card = new_card()
    result = tap(card, amount=60_000)
    assert result.outcome is Outcome.ONLINE_REQUEST
    assert result.oda_ok is True  # fDDA is checked for online requests too (transit)


def test_offline_spending_is_consumed() -> None:
    card = new_card("unionpay-debit")  # 300.00 offline
    assert tap(card, amount=20_000).outcome is Outcome.APPROVED_OFFLINE
    second = tap(card, amount=20_000)
    assert second.outcome is Outcome.ONLINE_REQUEST
    assert second.available_offline == 10_000


def test_offline_only_reader_declines_over_limit() -> None:
    result = tap(new_card(), amount=60_000, cfg=config(ttq=bytes.fromhex("28000000")))
    assert result.outcome is Outcome.DECLINED and result.reason == "card-declined"


def test_expired_and_not_yet_effective() -> None:
    expired = tap(new_card(), date=dt.date(2031, 1, 1))
    assert expired.outcome is Outcome.DECLINED and expired.reason == "card-expired"
    assert expired.tvr == "0040000000"
    early = tap(new_card(), date=dt.date(2020, 1, 1))
    assert early.outcome is Outcome.DECLINED and early.reason == "card-not-yet-effective"


def test_unknown_ca_fails_oda() -> None:
    empty = CaKeys(rsa=type(builtin_test_ca_keys().rsa).of([]))
    result = tap(new_card(), cfg=config(ca_keys=empty))
    assert result.outcome is Outcome.DECLINED
    assert result.reason == "oda-failed: unknown-ca" and result.oda_ok is False


def test_tampered_signature_fails_oda() -> None:
    card = new_card()

    def tamper(apdu: bytes) -> bytes:
        response = card.process(apdu)
        if apdu[1] == 0xA8:  # flip a bit inside the SDAD
            nodes = tlv.decode(response[:-2])
            sdad = nodes[0].find(0x9F4B)
            assert sdad is not None
            bad = bytearray(sdad.value)
            bad[10] ^= 1
            response = response.replace(sdad.value, bytes(bad))
        return response

    card.power_on()
    txn = TransactionInput(amount=200, date=TODAY, unpredictable_number=UN)
    result = run(Kernel(config(), txn), tamper)
    assert result.outcome is Outcome.DECLINED and result.reason is not None
    assert result.reason.startswith("oda-failed")


def test_terminal_priority_decides_and_unsupported_apps_end() -> None:
    only_epurse = config(aid_priority=(bytes.fromhex("A000000632010105"),))
    result = tap(new_card("unionpay-debit"), cfg=only_epurse)
    assert result.outcome is Outcome.END_APPLICATION
    assert result.reason == "no-supported-application"


def test_generate_ac_and_get_data() -> None:
    card = new_card()
    card.power_on()
    assert card.process(bytes.fromhex("00A4040008") + UNIONPAY_DEBIT + b"\x00")[-2:] == b"\x90\x00"
    cdol = bytes.fromhex("000000000200" "000000000000" "0156" "0000000000" "0156" "261123" "00")
    cdol += UN
    r = card.process(bytes.fromhex("80AE8000") + bytes((len(cdol),)) + cdol + b"\x00")
    assert r[-2:] == b"\x90\x00"
    objs = tlv.flatten(tlv.decode(r[:-2]))
    assert objs[0x9F27] == b"\x80" and len(objs[0x9F26]) == 8
    atc = card.process(bytes.fromhex("80CA9F3600"))
    assert atc == bytes.fromhex("9F36020001") + b"\x90\x00"


def test_ppse_lists_quickpass_and_t_union() -> None:
    card = new_card()
    card.power_on()
    r = card.process(bytes.fromhex("00A404000E325041592E5359532E444446303100"))
    aids = [n.value.hex().upper() for n in tlv.find_all(tlv.decode(r[:-2]), 0x4F)]
    assert aids == ["A000000333010101", "A000000632010105"]


def test_kernel_refuses_misuse() -> None:
    k = Kernel(config(), TransactionInput(amount=1, date=TODAY, unpredictable_number=UN))
    with pytest.raises(RuntimeError):
        k.receive(b"\x90\x00")
    assert isinstance(k.start(), Send)
    with pytest.raises(RuntimeError):
        k.start()


# --- hostile cards ----------------------------------------------------------------

Mutation = Callable[[bytes], bytes]
mutations: st.SearchStrategy[Mutation] = st.one_of(
    st.integers(0, 40).map(lambda n: (lambda r: r[:n])),                     # truncated
    st.binary(min_size=1, max_size=300).map(lambda b: (lambda r: r[:-2] + b + r[-2:])),
    st.binary(max_size=64).map(lambda b: (lambda r: b)),                     # random
    st.integers(0, 0xFF).map(lambda t: (lambda r: bytes((t,)) + r[1:])),     # wrong tag
    st.integers(0, 0xFFFF).map(lambda sw: (lambda r: r[:-2] + sw.to_bytes(2, "big"))),
    st.just(lambda r: r[:-2] + bytes(70000) + r[-2:]),                        # oversized
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 9), mutations, st.integers(1, 2_000_000))
def test_hostile_responses_end_in_a_defined_outcome(step: int, mutate: Mutation,
                                                    amount: int) -> None:
    card = new_card()
    card.power_on()
    seen = [0]

    def transceive(apdu: bytes) -> bytes:
        response = card.process(apdu)
        seen[0] += 1
        return mutate(response) if seen[0] - 1 == step else response

    kernel = Kernel(config(), TransactionInput(amount=amount, date=TODAY, unpredictable_number=UN))
    result = kernel.start()
    for _ in range(40):
        if isinstance(result, Finished):
            break
        result = kernel.receive(transceive(result.apdu))
    assert isinstance(result, Finished)
    assert result.result.outcome in set(Outcome)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_card_answers_anything_with_a_status_word(command: bytes) -> None:
    card = new_card()
    card.power_on()
    card.process(bytes.fromhex("00A4040008") + UNIONPAY_DEBIT + b"\x00")
    response = card.process(command)
    assert len(response) >= 2


def test_terminal_priority_over_card_priority() -> None:
    """The card prefers credit; the validator lists debit before credit and gets debit."""
    card = new_card("unionpay-dual")
    assert tap(card).aid == "A000000333010101"
    credit_first = config(aid_priority=(bytes.fromhex("A000000333010102"), UNIONPAY_DEBIT))
    assert tap(card, cfg=credit_first).aid == "A000000333010102"


def test_gpo_refusal_falls_back_to_the_next_application() -> None:
    card = new_card("unionpay-dual")

    gpos = []

    def refuse_credit(apdu: bytes) -> bytes:
        response = card.process(apdu)
        if apdu[1] == 0xA8:
            gpos.append(apdu)
            if len(gpos) == 1:  # the credit application's GPO
                return b"\x69\x85"
        return response

    card.power_on()
    cfg = config(aid_priority=(bytes.fromhex("A000000333010102"), UNIONPAY_DEBIT))
    txn = TransactionInput(amount=200, date=TODAY, unpredictable_number=UN)
    result = run(Kernel(cfg, txn), refuse_credit)
    assert result.outcome is Outcome.APPROVED_OFFLINE and result.aid == "A000000333010101"


# A GPO answer of plausible tags with arbitrary contents: the kernel's checks, not the TLV
# decoder, must catch these.
GPO_TAGS = [0x82, 0x94, 0x9F36, 0x9F26, 0x9F27, 0x9F10, 0x57, 0x5F34, 0x9F4B, 0x9F6C, 0x9F5D,
            0x5A, 0x5F24, 0x5F25, 0x8F, 0x90, 0x9F46, 0x9F69, 0xDF70]
gpo_answers = st.lists(
    st.tuples(st.sampled_from(GPO_TAGS), st.binary(max_size=20)), max_size=14,
).map(lambda objs: tlv.encode([(0x77, objs)]) + b"\x90\x00")


@settings(max_examples=400, deadline=None)
@given(gpo_answers)
def test_plausible_but_wrong_gpo_answers_end_defined(answer: bytes) -> None:
    card = new_card()
    card.power_on()

    def transceive(apdu: bytes) -> bytes:
        return answer if apdu[1] == 0xA8 else card.process(apdu)

    txn = TransactionInput(amount=200, date=TODAY, unpredictable_number=UN)
    result = run(Kernel(config(), txn), transceive)
    assert result.outcome in set(Outcome)
    assert result.outcome is not Outcome.APPROVED_OFFLINE
