"""The acquirer's sans-I/O parts: the core's requests as dialect messages and back, and the
stand-in rule (no sockets, no database)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from backoffice.acquirer.gateway import parse_issuer_url, stand_in
from backoffice.acquirer.mapping import (
    AcquirerConfig,
    Key,
    MappingError,
    answers,
    request_fields,
    reversal_fields,
)
from backoffice.engine import BackOffice
from isolink.dialect import load_dialect
from isolink.messages import read_icc, read_original
from issuer.codes import ResponseCode
from issuer.models import AuthKind, AuthorizationRequest, AuthResponse
from tests.core_fixtures import MERCHANT, T0, TestCard, config, flat_pricer, pan_for

DIALECT = load_dialect()
CFG = AcquirerConfig()


def _request(kind: AuthKind, amount: int = 0, rid: str = "av:A:t1") -> AuthorizationRequest:
    atc, arqc, data = TestCard(pan_for(7)).cryptogram()
    return AuthorizationRequest(rid, "ab" * 16, kind, amount, "CNY", MERCHANT, atc=atc,
                                arqc=arqc, ac_data=data)


def test_field_55_gives_the_host_back_the_exact_ac_input() -> None:
    request = _request(AuthKind.ACCOUNT_VERIFICATION)
    fields = request_fields(DIALECT, request, Key("0303080000", "000042"), CFG)
    decoded = DIALECT.decode(DIALECT.encode(fields))
    icc = read_icc(decoded["55"])
    assert (icc.atc, icc.arqc, icc.ac_data) == (request.atc, request.arqc, request.ac_data)
    assert decoded["t"] == "0100" and decoded["25"] == "51" and decoded["4"] == "0" * 12
    assert decoded["48"] == request.pan_token and "2" not in decoded  # the token, no PAN


def test_a_charge_names_its_verification_and_a_reversal_its_original() -> None:
    av_key, chg_key, rev_key = (Key("0303080000", "000001"), Key("0304040000", "000002"),
                                Key("0304040010", "000003"))
    charge = _request(AuthKind.DEFERRED, 1_200, "chg:A:t1")
    fields = request_fields(DIALECT, charge, chg_key, CFG, original=("0100", av_key))
    assert fields["t"] == "0200" and fields["25"] == "06" and int(fields["4"]) == 1_200
    assert read_original(fields["90"]) == ("0100", (CFG.acquirer_id, av_key.time, av_key.stan))
    rev = reversal_fields(DIALECT, "0200", chg_key, 1_200, rev_key, CFG, advice=True)
    DIALECT.check_required(DIALECT.decode(DIALECT.encode(rev)))
    assert rev["t"] == "0420"
    assert read_original(rev["90"])[1] == (CFG.acquirer_id, chg_key.time, chg_key.stan)
    answer = {"t": "0430", "7": rev_key.time, "11": rev_key.stan, "39": "00"}
    assert answers(DIALECT, rev, answer)
    assert not answers(DIALECT, rev, {**answer, "11": "000004"})
    assert answers(DIALECT, {**rev, "t": "0421"}, answer)  # a repeat's answer is the same


def test_an_ac_input_of_another_layout_is_refused_with_the_request_id() -> None:
    bad = AuthorizationRequest("av:A:x", "ab" * 16, AuthKind.ACCOUNT_VERIFICATION, 0, "CNY",
                               MERCHANT, atc=1, arqc=bytes(8), ac_data=bytes(10))
    with pytest.raises(MappingError, match="av:A:x"):
        request_fields(DIALECT, bad, Key("0303080000", "000001"), CFG)


@pytest.mark.parametrize(("kind", "rid", "amount", "limit", "code"), [
    (AuthKind.ACCOUNT_VERIFICATION, "av:A:1", 0, 0, ResponseCode.SYSTEM_MALFUNCTION),
    (AuthKind.ACCOUNT_VERIFICATION, "av:A:1", 0, 1, ResponseCode.APPROVED),
    (AuthKind.ACCOUNT_VERIFICATION, "av:A:1", 100, 99, ResponseCode.SYSTEM_MALFUNCTION),
    (AuthKind.DEFERRED, "chg:A:1", 500, 500, ResponseCode.ISSUER_UNAVAILABLE),
    (AuthKind.DEFERRED, "chg:A:1", 501, 500, ResponseCode.SYSTEM_MALFUNCTION),
    (AuthKind.RESUBMISSION, "rs:A:1:1", 9_999, 0, ResponseCode.ISSUER_UNAVAILABLE),
    (AuthKind.PURCHASE, "rec:t9", 9_999, 0, ResponseCode.ISSUER_UNAVAILABLE),
])
def test_stand_in_rule(kind: AuthKind, rid: str, amount: int, limit: int,
                       code: ResponseCode) -> None:
    request = AuthorizationRequest(rid, "ab" * 16, kind, amount, "CNY", MERCHANT)
    assert stand_in(request, limit) is code


class _Unreachable:
    """A gateway answering every request as the adapter does when it stood in."""

    def __init__(self, code: ResponseCode) -> None:
        self.code = code

    def authorize(self, request: AuthorizationRequest, now: object) -> AuthResponse:
        code = ResponseCode.APPROVED if request.request_id.startswith("av:") else self.code
        return AuthResponse(request.request_id, code, frozenset(), None)

    def capture(self, *args: object) -> None:
        raise AssertionError("nothing approved to capture")

    def release(self, *args: object) -> None:
        raise AssertionError("no hold")


@pytest.mark.parametrize(("code", "denied"), [(ResponseCode.ISSUER_UNAVAILABLE, False),
                                              (ResponseCode.SYSTEM_MALFUNCTION, True)])
def test_a_stood_in_charge_is_a_debt_and_denies_only_above_the_limit(
    code: ResponseCode, denied: bool
) -> None:
    card = TestCard(pan_for(8))
    bo = BackOffice(flat_pricer(), _Unreachable(code), config())  # type: ignore[arg-type]
    bo.ingest([card.tap("t1", T0)], T0)
    bo.close_due(T0 + timedelta(days=1))
    [debt] = bo.unpaid_debts()
    assert debt.amount == 200 and debt.last_code == code.value
    assert (card.token in bo.deny) is denied


def test_issuer_url() -> None:
    assert parse_issuer_url("iso8583://127.0.0.1:8583") == ("127.0.0.1", 8583)
    assert parse_issuer_url("iso8583://[::1]:8583/") == ("::1", 8583)
    for bad in ("iso8583://h", "tcp://h:1", "iso8583://h:0", "iso8583://:5"):
        with pytest.raises(MappingError):
            parse_issuer_url(bad)
