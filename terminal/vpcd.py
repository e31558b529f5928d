"""Serve a virtual card to pcscd's vpcd driver (vsmartcard), so PC/SC clients can tap it.

The vpcd driver inside pcscd listens on TCP (127.0.0.1:35963 for the first reader);
the card side connects to it.  Every message, both ways, is a 2-byte big-endian length
then the payload.  A 1-byte payload from vpcd is a control code: 00 power off, 01 power
on, 02 reset (no reply to any of these), 04 get ATR (reply: the ATR; the card's state is
left alone: vpcd's presence check asks for it at any time, see ``VpcdCard.handle``).  Any longer
payload is a command APDU, answered with the response APDU.

:class:`VpcdConnection` is the protocol as a sans-I/O state machine (bytes in -> events,
replies -> bytes out); :class:`VpcdCard` answers events with a card; :func:`serve` is the
small socket loop around them.

Latency: Debian's vpcd writes the length and the body in two ``send`` calls.  With
Nagle on its side and delayed ACK on ours, the body waits for our ACK of the length
(~40 ms per APDU).  Re-arming TCP_QUICKACK before every receive (Linux clears it again
by itself) makes the kernel ACK at once; measured here ~0.1-0.2 ms per APDU instead of
~48 ms (benchmarks/test_bench_terminal.py).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from emv.card.card import VirtualCard

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 35963
MAX_PAYLOAD = 0xFFFF


class Control(IntEnum):
    OFF = 0x00
    ON = 0x01
    RESET = 0x02
    ATR = 0x04


class VpcdProtocolError(ValueError):
    """vpcd sent something the protocol does not allow (says what, at which byte count)."""


@dataclass(frozen=True)
class PowerOff:
    pass


@dataclass(frozen=True)
class PowerOn:
    pass


@dataclass(frozen=True)
class Reset:
    pass


@dataclass(frozen=True)
class AtrRequest:
    pass


@dataclass(frozen=True)
class Apdu:
    command: bytes


VpcdEvent = PowerOff | PowerOn | Reset | AtrRequest | Apdu
_CONTROL_EVENTS: dict[int, VpcdEvent] = {
    Control.OFF: PowerOff(), Control.ON: PowerOn(), Control.RESET: Reset(),
    Control.ATR: AtrRequest(),
}


def frame(payload: bytes) -> bytes:
    """One message: 2-byte big-endian length, then the payload."""
    if not 0 < len(payload) <= MAX_PAYLOAD:
        raise VpcdProtocolError(f"payload of {len(payload)} bytes cannot be framed")
    return len(payload).to_bytes(2, "big") + payload


class VpcdConnection:
    """The card side's view of the byte stream from vpcd: feed bytes, get whole events."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.received = 0  # bytes consumed so far (for error positions)

    def receive_data(self, data: bytes) -> list[VpcdEvent]:
        """Events completed by ``data`` (possibly none: a frame may arrive in pieces)."""
        self._buf += data
        events: list[VpcdEvent] = []
        while len(self._buf) >= 2:
            size = int.from_bytes(self._buf[:2], "big")
            if size == 0:
                raise VpcdProtocolError(f"empty message at byte {self.received}")
            if len(self._buf) < 2 + size:
                break
            payload = bytes(self._buf[2:2 + size])
            del self._buf[:2 + size]
            at = self.received
            self.received += 2 + size
            if size == 1:
                event = _CONTROL_EVENTS.get(payload[0])
                if event is None:
                    raise VpcdProtocolError(f"unknown control code {payload[0]:02X} at byte {at}")
                events.append(event)
            else:
                events.append(Apdu(payload))
        return events

    @property
    def pending(self) -> int:
        """Bytes of an incomplete message held back."""
        return len(self._buf)


class VpcdCard:
    """A virtual card answering vpcd: ``feed`` the socket's bytes, send back what it returns."""

    def __init__(self, card: VirtualCard,
                 on_event: Callable[[VpcdEvent], None] | None = None) -> None:
        self.card = card
        self.connection = VpcdConnection()
        self.apdus = 0
        self._on_event = on_event

    def handle(self, event: VpcdEvent) -> bytes:
        """The framed reply to one event (empty for the controls that take none)."""
        if self._on_event is not None:
            self._on_event(event)
        if isinstance(event, Apdu):
            self.apdus += 1
            return frame(self.card.process(event.command))
        if isinstance(event, AtrRequest):
            # Not a reset: vpcd asks for the ATR to see whether the card is still there
            # (vicc_present, pcscd's presence poll, every few hundred ms), also in the middle
            # of a transaction; resetting here lost the selected application between GPO and
            # READ RECORD now and then (the reader then saw 6985 and declined the tap).
            return frame(self.card.atr)
        if isinstance(event, PowerOn | Reset):
            self.card.power_on()  # field on / warm reset: nothing selected
        return b""

    def feed(self, data: bytes) -> bytes:
        return b"".join(self.handle(e) for e in self.connection.receive_data(data))


@dataclass
class ServeStats:
    connections: int = 0
    apdus: int = 0


def parse_address(text: str | None) -> tuple[str, int]:
    """``HOST:PORT``, ``HOST`` or ``:PORT`` -> (host, port), defaults 127.0.0.1:35963."""
    if not text:
        return DEFAULT_HOST, DEFAULT_PORT
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, str(DEFAULT_PORT)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"vpcd address {text!r}: port must be 1-65535")
    return host.strip("[]") or DEFAULT_HOST, int(port)


def _connect(host: str, port: int, stop: threading.Event, retry: float) -> socket.socket | None:
    while not stop.is_set():
        try:
            sock = socket.create_connection((host, port), timeout=2.0)
        except OSError:
            stop.wait(retry)
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(0.25)  # wake up now and then to notice ``stop``
        return sock
    return None


def serve(card: VirtualCard, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *,
          quickack: bool = True, stop: threading.Event | None = None, once: bool = False,
          retry: float = 0.5, on_event: Callable[[VpcdEvent], None] | None = None,
          on_connect: Callable[[], None] | None = None) -> ServeStats:
    """Serve ``card`` to vpcd until ``stop`` is set (reconnecting when pcscd restarts).

    ``once``: return when the first connection ends instead of reconnecting.
    """
    stop = stop or threading.Event()
    stats = ServeStats()
    can_quickack = quickack and hasattr(socket, "TCP_QUICKACK")
    while not stop.is_set():
        sock = _connect(host, port, stop, retry)
        if sock is None:
            break
        stats.connections += 1
        if on_connect is not None:
            on_connect()
        session = VpcdCard(card, on_event)
        with contextlib.closing(sock):
            while not stop.is_set():
                if can_quickack:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
                try:
                    data = sock.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if not data:
                    break
                try:
                    reply = session.feed(data)
                except VpcdProtocolError:
                    break  # a confused peer: drop the connection, vpcd reconnects cleanly
                if reply:
                    sock.sendall(reply)
        stats.apdus += session.apdus
        if once:
            break
        time.sleep(0.05)
    return stats
