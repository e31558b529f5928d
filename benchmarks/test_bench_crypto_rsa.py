"""RSA offline data authentication costs with the shipped test keys (report only, no target).

The terminal side of an fDDA tap pays one SDAD verify (RSA-1024 public op, e = 3) and, unless
it caches recovered keys, an issuer and an ICC key recovery.  The card side (the in-process
virtual card) pays one RSA-1024 private op to sign.
"""

from __future__ import annotations

from datetime import date

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from emv.crypto import testkeys
from emv.crypto.rsa_certs import (
    IccCertificate,
    IssuerCertificate,
    icc_certificate,
    issuer_certificate,
    issuer_id_from_pan,
    recover_icc_key,
    recover_issuer_key,
    sign_dynamic_data,
    verify_dynamic_data,
)

PAN = "6217000010001234567"
TODAY = date(2026, 11, 23)
EXPIRY = bytes.fromhex("1230")
SERIAL = bytes.fromhex("000001")
STATIC = bytes.fromhex("5A0A6217000010001234567F5F24033012315F25032011017C00")
DDOL = bytes.fromhex("1A2B3C4D" "000000000200" "0156" "01AABBCCDD00008000")
DYNAMIC = bytes.fromhex("021234")

CA, ISSUER, ICC = testkeys.ca_key(), testkeys.issuer_key(), testkeys.icc_key()


@pytest.fixture(scope="module")
def issuer_cert() -> IssuerCertificate:
    return issuer_certificate(
        CA, ISSUER.public, issuer_id=issuer_id_from_pan(PAN), expiry=EXPIRY, serial=SERIAL
    )


@pytest.fixture(scope="module")
def icc_cert() -> IccCertificate:
    return icc_certificate(
        ISSUER, ICC.public, pan=PAN, expiry=EXPIRY, serial=SERIAL, static_data=STATIC
    )


def test_bench_sdad_verify_rsa1024(benchmark: BenchmarkFixture) -> None:
    sdad = sign_dynamic_data(ICC, DYNAMIC, DDOL)
    result = benchmark(verify_dynamic_data, ICC.public, sdad, DDOL)
    assert result == DYNAMIC


def test_bench_icc_key_recovery(benchmark: BenchmarkFixture, icc_cert: IccCertificate) -> None:
    def recover() -> object:
        return recover_icc_key(
            ISSUER.public,
            icc_cert.certificate,
            icc_cert.remainder,
            icc_cert.exponent,
            pan=PAN,
            static_data=STATIC,
            today=TODAY,
        )

    assert benchmark(recover) == ICC.public


def test_bench_issuer_key_recovery(
    benchmark: BenchmarkFixture, issuer_cert: IssuerCertificate
) -> None:
    def recover() -> object:
        return recover_issuer_key(
            CA.public,
            issuer_cert.certificate,
            issuer_cert.remainder,
            issuer_cert.exponent,
            pan=PAN,
            today=TODAY,
        )

    assert benchmark(recover) == ISSUER.public


def test_bench_sdad_sign_rsa1024(benchmark: BenchmarkFixture) -> None:
    """Card side, for the tap benchmark's budget: one CRT private op per fDDA."""
    sdad = benchmark(sign_dynamic_data, ICC, DYNAMIC, DDOL)
    assert verify_dynamic_data(ICC.public, sdad, DDOL) == DYNAMIC
