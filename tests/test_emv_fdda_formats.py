"""fDDA signed-data formats: qPBOC's 05 and Visa's 95 on RSA, PBOC's 15 on SM2, end to end."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib

import pytest

from emv.card.card import VirtualCard
from emv.card.image import CardImage, personalise
from emv.card.profile import load_profile
from emv.crypto import rsa_certs, testkeys
from emv.crypto.errors import CertificateError
from emv.crypto.sm2_certs import sm2_sign_dynamic_data, sm2_verify_dynamic_data
from emv.crypto.testkeys_sm2 import sm2_test_icc
from emv.kernel import Kernel, Outcome, TerminalConfig, TransactionInput, run
from emv.oda import RsaCardOda, builtin_test_ca_keys

DDOL = bytes.fromhex("1A2B3C4D" "000000000200" "0156" "01AABBCCDD00008000")
DYNAMIC = bytes.fromhex("02" "1234")
ICC = testkeys.icc_key()


@pytest.mark.parametrize("fmt", [0x05, 0x95])
def test_rsa_sdad_of_either_format_verifies(fmt: int) -> None:
    sdad = rsa_certs.sign_dynamic_data(ICC, DYNAMIC, DDOL, fmt=fmt)
    assert ICC.public.raw_public(sdad)[1] == fmt
    assert rsa_certs.verify_dynamic_data(ICC.public, sdad, DDOL) == DYNAMIC


@pytest.mark.parametrize("fmt", [0x03, 0x04, 0x15, 0x96])
def test_rsa_sdad_of_another_format_is_bad_format(fmt: int) -> None:
    room = ICC.public.size - 25
    body = bytes([fmt, 0x01, len(DYNAMIC)]) + DYNAMIC + b"\xbb" * (room - len(DYNAMIC))
    block = ICC.raw_private(b"\x6a" + body + hashlib.sha1(body + DDOL).digest() + b"\xbc")
    with pytest.raises(CertificateError) as info:
        rsa_certs.verify_dynamic_data(ICC.public, block, DDOL)
    assert info.value.reason == "bad-format"
    assert "expected 05 or 95" in str(info.value)


def test_signing_refuses_a_format_that_is_not_an_sdad() -> None:
    with pytest.raises(rsa_certs.RsaInputError):
        rsa_certs.sign_dynamic_data(ICC, DYNAMIC, DDOL, fmt=0x04)


def test_sm2_sdad_is_format_15_only() -> None:
    icc = sm2_test_icc()
    sdad = sm2_sign_dynamic_data(icc.private_key, DYNAMIC, DDOL)
    assert sdad[0] == 0x15
    assert sm2_verify_dynamic_data(icc.public_key, sdad, DDOL) == DYNAMIC
    with pytest.raises(CertificateError) as info:
        sm2_verify_dynamic_data(icc.public_key, b"\x95" + sdad[1:], DDOL)
    assert info.value.reason == "bad-format"


@dataclasses.dataclass(frozen=True)
class VisaFddaOda(RsaCardOda):
    """The card's RSA fDDA signing Visa's format 95."""

    def sign_dynamic_data(self, icc_dynamic_data: bytes, ddol_data: bytes) -> bytes:
        return rsa_certs.sign_dynamic_data(self.icc_key, icc_dynamic_data, ddol_data, fmt=0x95)


def visa_format_image(image: CardImage) -> CardImage:
    apps = {}
    for aid, app in image.apps.items():
        apps[aid] = app
        if isinstance(app.oda, RsaCardOda):  # the e-purse has no fDDA
            oda = VisaFddaOda(objects=app.oda.objects, icc_key=app.oda.icc_key)
            apps[aid] = dataclasses.replace(app, oda=oda)
    return dataclasses.replace(image, apps=apps)


@pytest.mark.parametrize("card", ["sscard3", "sscard3-sm"])
def test_kernel_approves_each_suite_and_format(card: str) -> None:
    image = personalise(load_profile(card))
    if card == "sscard3":
        image = visa_format_image(image)
    vc = VirtualCard(image)
    vc.power_on()
    cfg = TerminalConfig(ca_keys=builtin_test_ca_keys(), token_key=b"k" * 32)
    txn = TransactionInput(amount=200, date=dt.date(2026, 11, 23),
                           unpredictable_number=bytes.fromhex("A1B2C3D4"))
    result = run(Kernel(cfg, txn), vc.process)
    assert result.outcome is Outcome.APPROVED_OFFLINE, result.reason
    assert result.oda_ok is True
    assert result.oda == ("fdda-rsa" if card == "sscard3" else "fdda-sm2")
