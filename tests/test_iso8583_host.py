"""`tapsim issuer run` as a real process on 127.0.0.1: decisions, repeats, reversals, bad
input, kill -9 and restart, signals."""

from __future__ import annotations

import json
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from emv.card.profile import load_profile
from isolink.dialect import DEFAULT_SPEC
from isolink.framing import frame
from isolink.messages import original_data, request_key
from isolink.taps import CardTapper
from tapsim.cli import main
from tests.core_fixtures import BACKENDS, fresh_db_url
from tests.iso8583_support import (
    DIALECT,
    Client,
    Host,
    authorization,
    issue,
    next_stan,
    running_host,
    start_host,
    token,
)


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sscard3 active with 100.00; unionpay-debit issued but never activated."""
    path = tmp_path_factory.mktemp("iso") / "bank.db"
    issue(path, "sscard3", balance=10_000)
    issue(path, "unionpay-debit", balance=10_000, activate=False)
    return path


@pytest.fixture(scope="module")
def host(db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    with running_host(db, tmp_path_factory.mktemp("host")) as h:
        yield h


@pytest.fixture(scope="module")
def card() -> CardTapper:
    return CardTapper(load_profile("sscard3"))


def account(db: Path, profile: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["account", "show", "--card", profile, "--db", str(db), "--json"]) == 0
    out: dict[str, Any] = json.loads(capsys.readouterr().out)["account"]
    return out


def test_account_verification_of_an_issued_card_is_approved(host: Host, card: CardTapper
                                                            ) -> None:
    c = Client(host.port)
    request = authorization(card, token("sscard3"))
    answer = c.ask(request)
    assert answer["t"] == "0110"
    assert answer["39"] == "00"
    assert len(answer["38"]) == 6
    for f in ("7", "11", "32", "37", "48"):  # matched by the echoed key and reference
        assert answer[f] == request[f]


def test_a_forged_arqc_is_refused_with_the_issuers_code(host: Host, card: CardTapper) -> None:
    request = authorization(card, token("sscard3"))
    icc = bytearray.fromhex(request["55"])
    icc[3] ^= 0x01  # first byte of 9F26's value (tag 2 + length 1)
    request["55"] = icc.hex().upper()
    assert Client(host.port).ask(request)["39"] == "63"  # issuer/README: security violation


def test_an_account_not_activated_is_refused(host: Host) -> None:
    other = CardTapper(load_profile("unionpay-debit"))
    answer = Client(host.port).ask(authorization(other, token("unionpay-debit")))
    assert answer["39"] == "78"  # issuer/README: financial function not activated
    assert "38" not in answer


def test_an_unknown_card_is_refused(host: Host, card: CardTapper) -> None:
    assert Client(host.port).ask(authorization(card, "f" * 32))["39"] == "14"


def test_a_repeat_gets_the_identical_answer(host: Host, card: CardTapper) -> None:
    c = Client(host.port)
    request = authorization(card, token("sscard3"))
    c.send(request)
    first = c.receive_raw()
    c.send(request)  # same key: answered from the issuer's record, not decided again
    assert c.receive_raw() == first
    c.send({**request, "t": "0101"})  # the repeat MTI of ISO 8583
    again = DIALECT.decode(c.receive_raw())
    assert (again["39"], again["38"]) == (DIALECT.decode(first)["39"],
                                          DIALECT.decode(first)["38"])


def test_reversal_releases_the_hold_and_is_idempotent(host: Host, card: CardTapper, db: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    c = Client(host.port)
    held_before = account(db, "sscard3", capsys)["held"]
    request = authorization(card, token("sscard3"), amount=150)  # a nominal hold
    assert c.ask(request)["39"] == "00"
    assert account(db, "sscard3", capsys)["held"] == held_before + 150
    reversal = {"t": "0400", "4": request["4"], "7": request["7"], "11": next_stan(),
                "32": request["32"], "37": request["37"],
                "90": original_data("0100", request_key(request))}  # fmt: skip
    c.send(reversal)
    first = c.receive_raw()
    assert DIALECT.decode(first)["t"] == "0410"
    assert DIALECT.decode(first)["39"] == "00"
    assert account(db, "sscard3", capsys)["held"] == held_before
    c.send(reversal)
    assert c.receive_raw() == first  # the repeat
    second = {**reversal, "t": "0420", "11": next_stan()}  # already reversed: still done
    answer = c.ask(second)
    assert (answer["t"], answer["39"]) == ("0430", "00")
    assert account(db, "sscard3", capsys)["held"] == held_before


def test_reversal_of_an_unknown_request(host: Host) -> None:
    unknown = ("10000000001", "0101000000", "999999")
    answer = Client(host.port).ask({
        "t": "0400", "4": "0" * 12, "7": "1207083015", "11": next_stan(), "32": "10000000001",
        "37": "000000000001", "90": original_data("0100", unknown),
    })  # fmt: skip
    assert answer["39"] == "25"  # unable to locate the original (isolink/README)


def test_financial_request_charges_the_aggregate_once(host: Host, card: CardTapper, db: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    c = Client(host.port)
    verification = authorization(card, token("sscard3"))
    assert c.ask(verification)["39"] == "00"
    balance = account(db, "sscard3", capsys)["balance"]
    # The aggregate's charge reuses the verified cryptogram (DEFERRED, issuer/README) and
    # names the verification in field 90.
    charge = {**verification, "t": "0200", "4": f"{420:012d}", "11": next_stan(),
              "25": DIALECT.kind_code("deferred"),
              "90": original_data("0100", request_key(verification))}  # fmt: skip
    c.send(charge)
    first = c.receive_raw()
    assert DIALECT.decode(first)["39"] == "00"
    c.send(charge)
    assert c.receive_raw() == first
    assert account(db, "sscard3", capsys)["balance"] == balance - 420
    reversal = {"t": "0400", "4": charge["4"], "7": charge["7"], "11": next_stan(),
                "32": charge["32"], "37": charge["37"],
                "90": original_data("0200", request_key(charge))}  # fmt: skip
    assert c.ask(reversal)["39"] == "21"  # captured: no action taken (no refund at the issuer)
    assert account(db, "sscard3", capsys)["balance"] == balance - 420


def test_echo_and_sign_on(host: Host) -> None:
    c = Client(host.port)
    for code in ("001", "301", "002"):
        answer = c.ask({"t": "0800", "7": "1207083015", "11": next_stan(), "70": code})
        assert (answer["t"], answer["39"], answer["70"]) == ("0810", "00", code)


# -- bad input ----------------------------------------------------------------------------------


def _echo_ok(port: int) -> None:
    """Another client is still served."""
    answer = Client(port).ask({"t": "0800", "7": "1207083015", "11": next_stan(), "70": "301"})
    assert answer["39"] == "00"


def test_wrong_field_format_is_answered_30(host: Host, card: CardTapper) -> None:
    request = authorization(card, token("sscard3"))
    raw = DIALECT.encode(request).replace(request["4"].encode(), b"00000000ABCD", 1)
    c = Client(host.port)
    c.send_raw(frame(raw))
    answer = c.receive()
    assert (answer["t"], answer["11"], answer["39"]) == ("0110", request["11"], "30")
    assert answer["7"] == request["7"]
    _echo_ok(host.port)
    assert c.ask({"t": "0800", "7": "1207083015", "11": next_stan(), "70": "301"})["39"] == "00"


def test_bad_bitmap_is_answered_30_when_the_stan_was_read(host: Host) -> None:
    raw = bytearray(DIALECT.encode({"t": "0800", "7": "1207083015", "11": "123456",
                                    "70": "301"}))
    raw[4 + 7] |= 0x01  # bit 64: a MAC the dialect does not have, and no data for it
    c = Client(host.port)
    c.send_raw(frame(bytes(raw)))
    answer = c.receive()
    assert (answer["t"], answer["11"], answer["39"]) == ("0810", "123456", "30")


def test_missing_required_field_is_answered_30(host: Host, card: CardTapper) -> None:
    request = authorization(card, token("sscard3"))
    del request["48"]
    answer = Client(host.port).ask(request)
    assert (answer["11"], answer["39"]) == (request["11"], "30")


def test_garbage_is_dropped_with_a_logged_reason(host: Host) -> None:
    c = Client(host.port, timeout=1.0)
    c.send_raw(frame(b"\xff\xfe garbage, not ISO 8583"))
    with pytest.raises(socket.timeout):
        c.receive_raw()
    assert "dropped a message" in host.stderr()
    # The connection stays usable: framing was intact.
    c.sock.settimeout(10)
    assert c.ask({"t": "0800", "7": "1207083015", "11": next_stan(), "70": "301"})["39"] == "00"


def test_oversized_length_closes_that_connection_only(host: Host) -> None:
    c = Client(host.port)
    c.send_raw(b"\xff\xff" + b"x" * 100)
    with pytest.raises(ConnectionError):
        c.receive_raw()
    assert "above the limit of 4096" in host.stderr()
    _echo_ok(host.port)


def test_truncated_frame_is_logged_and_dropped(host: Host) -> None:
    c = Client(host.port)
    c.send_raw(frame(b"0800 and more")[:6])
    c.sock.shutdown(socket.SHUT_WR)
    with pytest.raises(ConnectionError):
        c.receive_raw()
    assert "stream ended after 6 of 15 bytes" in host.stderr()
    _echo_ok(host.port)


def test_unknown_message_type_is_dropped(host: Host) -> None:
    c = Client(host.port, timeout=1.0)
    c.send_raw(frame(DIALECT.encode({"t": "0110", "11": "000001", "39": "00"})))
    with pytest.raises(socket.timeout):
        c.receive_raw()
    assert "is not a request of this dialect" in host.stderr()
    _echo_ok(host.port)


# -- durability and signals --------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def fresh_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each backend (PostgreSQL: a schema of its own, dropped after)."""
    yield from fresh_db_url(request.param, tmp_path)


def test_answers_survive_kill_9_and_restart(fresh_db: str, tmp_path: Path) -> None:
    db = fresh_db
    issue(db, "sscard3", balance=500)
    issue(db, "unionpay-debit", activate=False)
    good, inactive = CardTapper(load_profile("sscard3")), CardTapper(load_profile("unionpay-debit"))
    requests = [authorization(good, token("sscard3"), amount=100) for _ in range(3)]
    requests += [authorization(good, token("sscard3"), amount=400),  # 51: above available
                 authorization(inactive, token("unionpay-debit"))]
    host = start_host(db, tmp_path)
    c = Client(host.port)
    first = []
    for r in requests:
        c.send(r)
        first.append(c.receive_raw())
    assert [DIALECT.decode(a)["39"] for a in first] == ["00", "00", "00", "51", "78"]
    host.proc.send_signal(signal.SIGKILL)
    host.proc.wait()
    again = start_host(db, tmp_path)
    try:
        c = Client(again.port)
        for r, answer in zip(requests, first, strict=True):
            c.send(r)
            assert c.receive_raw() == answer
    finally:
        assert again.stop(signal.SIGTERM) == 143


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signals_end_the_host_cleanly(tmp_path: Path, sig: int, code: int) -> None:
    db = tmp_path / "bank.db"  # its own: the module's host holds the shared one's records
    issue(db, "sscard3")
    host = start_host(db, tmp_path)
    _echo_ok(host.port)
    assert host.stop(sig) == code
    assert "tapsim: interrupted: answered 1 message(s)" in host.stderr()


def test_the_same_request_on_two_connections_at_once_holds_once(
        host: Host, card: CardTapper, db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    held = account(db, "sscard3", capsys)["held"]
    request = authorization(card, token("sscard3"), amount=70)
    clients = [Client(host.port) for _ in range(4)]
    raw = frame(DIALECT.encode(request))
    for c in clients:  # all sent before any answer is read
        c.send_raw(raw)
    answers = {c.receive_raw() for c in clients}
    assert len(answers) == 1
    assert DIALECT.decode(answers.pop())["39"] == "00"
    assert account(db, "sscard3", capsys)["held"] == held + 70


def test_a_card_issued_while_the_host_runs_is_known_at_once(tmp_path: Path) -> None:
    db = tmp_path / "bank.db"
    issue(db, "sscard3")
    with running_host(db, tmp_path) as host:
        tapper = CardTapper(load_profile("sscard3-sm"))
        c = Client(host.port)
        assert c.ask(authorization(tapper, token("sscard3-sm")))["39"] == "14"  # unknown
        issue(db, "sscard3-sm")  # `tapsim card issue` beside the running host
        assert c.ask(authorization(tapper, token("sscard3-sm")))["39"] == "00"
        assert "reloaded" in host.stderr()


def test_the_host_speaks_the_dialect_of_spec(tmp_path: Path) -> None:
    raw = json.loads(DEFAULT_SPEC.read_text())
    codes = raw["pos_condition_codes"]
    codes["52"] = codes.pop("51")  # this bank's dialect: account verification is 52
    spec = tmp_path / "bank-dialect.json"
    spec.write_text(json.dumps(raw))
    db = tmp_path / "bank.db"
    issue(db, "sscard3")
    tapper = CardTapper(load_profile("sscard3"))
    with running_host(db, tmp_path, "--spec", str(spec)) as host:
        c = Client(host.port)
        ours = authorization(tapper, token("sscard3"))  # field 25 = 51, tapsim's dialect
        assert c.ask(ours)["39"] == "30"
        assert "POS condition code '51' unknown" in host.stderr()
        theirs = {**authorization(tapper, token("sscard3")), "25": "52"}
        assert c.ask(theirs)["39"] == "00"
