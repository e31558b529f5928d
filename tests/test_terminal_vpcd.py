"""terminal.vpcd: the vpcd protocol as a state machine, the socket loop, and real pcscd."""

from __future__ import annotations

import datetime as dt
import itertools
import socket
import threading
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emv.card.card import ATR
from emv.kernel import Kernel, TransactionInput, run
from terminal.readers import PcscReader, VirtualReader
from terminal.vpcd import (
    Apdu,
    AtrRequest,
    PowerOff,
    PowerOn,
    Reset,
    VpcdCard,
    VpcdConnection,
    VpcdProtocolError,
    frame,
    parse_address,
    serve,
)
from tests.fixtures.pcsc import ServeCard
from tests.fixtures.terminal import TERMINAL, card

SELECT_PPSE = bytes.fromhex("00A404000E325041592E5359532E444446303100")
STREAM = (frame(b"\x04") + frame(b"\x01") + frame(SELECT_PPSE) + frame(b"\x02")
          + frame(b"\x00"))
EVENTS = [AtrRequest(), PowerOn(), Apdu(SELECT_PPSE), Reset(), PowerOff()]


def test_events_from_one_stream() -> None:
    assert VpcdConnection().receive_data(STREAM) == EVENTS


@given(st.lists(st.integers(0, len(STREAM)), max_size=12))
def test_any_split_of_the_stream_gives_the_same_events(cuts: list[int]) -> None:
    conn = VpcdConnection()
    events = []
    points = [0, *sorted(cuts), len(STREAM)]
    for a, b in itertools.pairwise(points):
        events += conn.receive_data(STREAM[a:b])
    assert events == EVENTS and conn.pending == 0


def test_length_and_body_in_two_writes() -> None:
    """Debian's vpcd sends the 2-byte length, then the body: nothing until both are in."""
    conn = VpcdConnection()
    assert conn.receive_data(len(SELECT_PPSE).to_bytes(2, "big")) == []
    assert conn.pending == 2
    assert conn.receive_data(SELECT_PPSE) == [Apdu(SELECT_PPSE)]


def test_protocol_errors_say_where() -> None:
    with pytest.raises(VpcdProtocolError, match="unknown control code 07 at byte 3"):
        VpcdConnection().receive_data(frame(b"\x01") + frame(b"\x07"))
    with pytest.raises(VpcdProtocolError, match="empty message at byte 0"):
        VpcdConnection().receive_data(b"\x00\x00")
    with pytest.raises(VpcdProtocolError):
        frame(b"")
    with pytest.raises(VpcdProtocolError):
        frame(bytes(0x10000))


def test_card_answers_only_what_needs_an_answer() -> None:
    c = card()
    session = VpcdCard(c)
    assert session.feed(frame(b"\x01")) == b""  # power on: no reply
    assert session.feed(frame(b"\x04")) == frame(ATR)
    reply = session.feed(frame(SELECT_PPSE))
    assert reply == frame(card().process(SELECT_PPSE)) and reply[-2:] == b"\x90\x00"
    assert session.feed(frame(b"\x02") + frame(b"\x00")) == b""
    assert session.apdus == 1


def test_a_presence_poll_in_the_middle_of_a_tap_does_not_reset_the_card() -> None:
    """vpcd's vicc_present() sends 04 (get ATR) "to check if the card is still alive" whenever
    pcscd polls the reader (frankmorgner/vsmartcard, virtualsmartcard/src/vpcd/vpcd.c), so it
    can fall between any two APDUs of a tap; a real vicc answers it with the ATR only
    (VirtualSmartcard.py: VPCD_CTRL_ATR -> getATR()).  Only 01 and 02 reset the card."""
    c = card()
    session = VpcdCard(c)
    aid = next(iter(c.image.apps))
    select = bytes([0x00, 0xA4, 0x04, 0x00, len(aid)]) + aid + b"\x00"
    get_atc = bytes.fromhex("80CA9F3600")  # GET DATA ATC: answered only in a selected app
    assert session.feed(frame(select))[-2:] == b"\x90\x00"
    assert session.feed(frame(b"\x04")) == frame(ATR)
    assert session.feed(frame(get_atc))[-2:] == b"\x90\x00"  # still selected
    assert session.feed(frame(b"\x02")) == b""
    assert session.feed(frame(get_atc))[-2:] == b"\x69\x85"  # a reset deselects


def test_addresses() -> None:
    assert parse_address(None) == ("127.0.0.1", 35963)
    assert parse_address("10.0.0.5:35964") == ("10.0.0.5", 35964)
    assert parse_address("vpcd-host") == ("vpcd-host", 35963)
    assert parse_address(":4000") == ("127.0.0.1", 4000)
    assert parse_address("[::1]:4000") == ("::1", 4000)
    with pytest.raises(ValueError, match="port"):
        parse_address("host:0")
    with pytest.raises(ValueError, match="port"):
        parse_address("host:http")


@pytest.fixture
def fake_vpcd() -> Iterator[socket.socket]:
    """A listening socket standing in for pcscd's vpcd driver."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(10)
    yield server
    server.close()


def _exchange(conn: socket.socket, payload: bytes, reply: bool = True) -> bytes:
    conn.sendall(len(payload).to_bytes(2, "big"))  # as Debian's vpcd does: two writes
    conn.sendall(payload)
    if not reply:
        return b""
    size = int.from_bytes(conn.recv(2, socket.MSG_WAITALL), "big")
    return conn.recv(size, socket.MSG_WAITALL)


def test_serve_loop_answers_and_reconnects(fake_vpcd: socket.socket) -> None:
    stop = threading.Event()
    port = fake_vpcd.getsockname()[1]
    result: list[object] = []
    t = threading.Thread(target=lambda: result.append(
        serve(card(), "127.0.0.1", port, stop=stop, retry=0.05)))
    t.start()
    try:
        conn, _ = fake_vpcd.accept()
        with conn:
            assert _exchange(conn, b"\x04") == ATR
            _exchange(conn, b"\x01", reply=False)
            assert _exchange(conn, SELECT_PPSE)[-2:] == b"\x90\x00"
        conn, _ = fake_vpcd.accept()  # vpcd went away and came back: the card reconnects
        with conn:
            assert _exchange(conn, SELECT_PPSE)[-2:] == b"\x90\x00"
            conn.sendall(b"\x00\x01\x09")  # a control code vpcd never sends
            assert conn.recv(1) == b""  # the card side drops the confused connection
    finally:
        stop.set()
        t.join(10)
    stats = result[0]
    assert stats.connections >= 2 and stats.apdus == 2  # type: ignore[attr-defined]


# -- real pcscd + vpcd + pyscard ------------------------------------------------------

@pytest.mark.service
def test_tap_over_pcsc_equals_the_in_process_tap(pcscd: str, served_card: ServeCard) -> None:
    served_card("sscard3")
    txn = TransactionInput(amount=200, date=dt.date(2026, 11, 23),
                           unpredictable_number=bytes.fromhex("CAFEBABE"))
    reader = PcscReader(pcscd)
    assert reader.power_on() == ATR
    try:
        over_pcsc = run(Kernel(TERMINAL, txn), reader.transceive)
    finally:
        reader.close()
    local = VirtualReader(card())
    local.power_on()
    in_process = run(Kernel(TERMINAL, txn), local.transceive)
    assert over_pcsc.outcome.value == "approved-offline"
    assert vars(over_pcsc) == vars(in_process)


@pytest.mark.service
def test_validator_cli_over_pcsc(pcscd: str, served_card: ServeCard, tmp_path: object) -> None:
    import json
    import subprocess
    import sys

    served_card("sscard3")
    out = subprocess.run(
        [sys.executable, "-m", "tapsim.cli", "terminal", "run", "--reader", f"pcsc:{pcscd}",
         "--taps", "2", "--duplicate-window", "0", "--json", "--validator-id", "PC1",
         "--journal", f"{tmp_path}/pc1.journal"],
        capture_output=True, text=True, timeout=60, check=True)
    taps = [json.loads(x) for x in out.stdout.splitlines()]
    assert [t["outcome"] for t in taps] == ["accepted", "accepted"], (taps, out.stderr)
    assert [t["rider_category"] for t in taps] == ["senior", "senior"]
