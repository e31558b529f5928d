"""The virtual card honours each TTQ bit qPBOC defines; the kernel reads what the card answers.

Each test sets one bit on the kernel's default TTQ (27000000: qPBOC, online PIN, signature, ODA
for online authorizations) and checks the card's cryptogram type, CTQ and fDDA, and the
kernel's outcome.
"""

from __future__ import annotations

import datetime as dt

from emv import tlv
from emv.appdata import CID_AAC, CID_ARQC, CID_TC
from emv.card.card import VirtualCard
from emv.card.image import personalise
from emv.card.profile import load_profile
from emv.kernel import Exchange, Kernel, Outcome, TapResult, TerminalConfig, TransactionInput, run
from emv.oda import builtin_test_ca_keys

TOKEN_KEY = b"tapsim-test-token-key-0000000000"
TODAY = dt.date(2026, 11, 23)
UN = bytes.fromhex("A1B2C3D4")
DEFAULT = bytes.fromhex("27000000")


def ttq_with(byte: int, mask: int, base: bytes = DEFAULT) -> bytes:
    out = bytearray(base)
    out[byte] |= mask
    return bytes(out)


def ttq_without(byte: int, mask: int, base: bytes = DEFAULT) -> bytes:
    out = bytearray(base)
    out[byte] &= ~mask & 0xFF
    return bytes(out)


def tap(ttq: bytes, amount: int = 200, card: str = "sscard3") -> tuple[TapResult, dict[int, bytes]]:
    """Tap once; the result and the card's GPO answer, flattened."""
    vc = VirtualCard(personalise(load_profile(card)))
    vc.power_on()
    trace: list[Exchange] = []
    cfg = TerminalConfig(ca_keys=builtin_test_ca_keys(), token_key=TOKEN_KEY, ttq=ttq)
    txn = TransactionInput(amount=amount, date=TODAY, unpredictable_number=UN)
    result = run(Kernel(cfg, txn), vc.process, trace)
    gpo = next((e.response for e in trace if e.command[1] == 0xA8), b"")
    flat = tlv.flatten(tlv.decode(gpo[:-2])) if gpo[-2:] == b"\x90\x00" else {}
    return result, flat


def test_default_ttq_gets_an_offline_approval_with_fdda() -> None:
    result, gpo = tap(DEFAULT)
    assert result.outcome is Outcome.APPROVED_OFFLINE and result.oda_ok is True
    assert gpo[0x9F27] == bytes((CID_TC,)) and gpo[0x9F6C] == bytes(2)
    assert result.cvm is None and result.issuer_update is False


def test_online_cryptogram_required_gives_arqc() -> None:
    """The issue's case: TTQ 26800000 (byte 2 bit 8) and the card must not answer TC."""
    result, gpo = tap(bytes.fromhex("26800000"))
    assert gpo[0x9F27] == bytes((CID_ARQC,))
    assert result.outcome is Outcome.ONLINE_REQUEST
    # 26: no "ODA for online authorizations": the card does not sign an ARQC.
    assert 0x9F4B not in gpo and result.oda_ok is None and result.tvr == "8000000000"


def test_oda_for_online_authorizations_makes_the_card_sign_its_arqc() -> None:
    result, gpo = tap(ttq_with(1, 0x80))  # 27800000
    assert gpo[0x9F27] == bytes((CID_ARQC,)) and 0x9F4B in gpo
    assert result.outcome is Outcome.ONLINE_REQUEST and result.oda_ok is True
    # Without the bit, over the offline limit: ARQC, unsigned.
    result, gpo = tap(ttq_without(0, 0x01), amount=60_000)
    assert gpo[0x9F27] == bytes((CID_ARQC,)) and 0x9F4B not in gpo
    assert result.outcome is Outcome.ONLINE_REQUEST and result.oda_ok is None


def test_offline_only_reader_gets_a_decline_where_the_card_would_go_online() -> None:
    offline_only = ttq_with(0, 0x08)
    result, gpo = tap(offline_only, amount=60_000)
    assert gpo[0x9F27] == bytes((CID_AAC,)) and 0x9F4B not in gpo
    assert result.outcome is Outcome.DECLINED and result.reason == "card-declined"
    # Even when the reader also says "online cryptogram required": it cannot go online.
    result, gpo = tap(ttq_with(1, 0x80, offline_only))
    assert gpo[0x9F27] == bytes((CID_AAC,))
    # Within the limit the offline-only reader gets its offline approval.
    result, gpo = tap(offline_only)
    assert result.outcome is Outcome.APPROVED_OFFLINE


def test_online_capable_reader_gets_the_arqc() -> None:
    result, gpo = tap(DEFAULT, amount=60_000)  # byte 1 bit 4 clear: online capable
    assert gpo[0x9F27] == bytes((CID_ARQC,)) and result.outcome is Outcome.ONLINE_REQUEST


def test_cvm_required_online_pin_when_the_reader_takes_it() -> None:
    result, gpo = tap(ttq_with(1, 0x40))  # 27400000: online PIN supported -> online PIN
    assert gpo[0x9F6C] == bytes.fromhex("8000") and gpo[0x9F27] == bytes((CID_ARQC,))
    assert result.outcome is Outcome.ONLINE_REQUEST and result.cvm == "online-pin"


def test_cvm_required_signature_when_no_online_pin() -> None:
    result, gpo = tap(ttq_with(1, 0x40, ttq_without(0, 0x04)))  # 23400000
    assert gpo[0x9F6C] == bytes.fromhex("4000") and gpo[0x9F27] == bytes((CID_TC,))
    assert result.outcome is Outcome.APPROVED_OFFLINE and result.cvm == "signature"


def test_cvm_required_without_a_cvm_the_reader_can_do_declines() -> None:
    result, gpo = tap(bytes.fromhex("21400000"))  # no online PIN, no signature
    assert gpo[0x9F27] == bytes((CID_AAC,))
    assert result.outcome is Outcome.DECLINED


def test_issuer_update_processing_is_offered_on_an_online_request() -> None:
    result, gpo = tap(bytes.fromhex("27808000"))
    assert gpo[0x9F6C] == bytes.fromhex("0040") and result.issuer_update is True
    # Not offered on an offline approval, nor when the reader does not support it.
    result, gpo = tap(bytes.fromhex("27008000"))
    assert gpo[0x9F6C] == bytes(2) and result.issuer_update is False
    result, gpo = tap(bytes.fromhex("27800000"))
    assert gpo[0x9F6C] == bytes(2) and result.issuer_update is False


def test_reader_without_qpboc_is_refused() -> None:
    result, gpo = tap(bytes.fromhex("86000000"))  # MSD only (Proxmark3 emv_defparams.json)
    assert gpo == {}
    assert result.outcome is Outcome.TRY_ANOTHER_INTERFACE


def test_online_gpo_answer_without_afl_and_cid_is_an_online_request() -> None:
    """qPBOC: a card asking to go online may leave out 94 and 9F27; the CVR in 9F10 says ARQC."""
    vc = VirtualCard(personalise(load_profile("sscard3")))
    vc.power_on()

    def strip(apdu: bytes) -> bytes:
        response = vc.process(apdu)
        if apdu[1] != 0xA8:
            return response
        objs = [(n.tag, n.value) for n in tlv.decode(response[:-2])[0].children or ()
                if n.tag not in (0x94, 0x9F27, 0x9F4B)]
        return tlv.encode([(0x77, objs)]) + b"\x90\x00"

    trace: list[Exchange] = []
    cfg = TerminalConfig(ca_keys=builtin_test_ca_keys(), token_key=TOKEN_KEY,
                         ttq=bytes.fromhex("26800000"))
    txn = TransactionInput(amount=200, date=TODAY, unpredictable_number=UN)
    result = run(Kernel(cfg, txn), strip, trace)
    assert result.outcome is Outcome.ONLINE_REQUEST, result.reason
    assert len(trace) == 3  # PPSE, AID, GPO: nothing to read
    assert result.cid == CID_ARQC and result.pan_masked == "623190*********0014"
