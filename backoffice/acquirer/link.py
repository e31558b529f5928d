"""A thin blocking client for the bank's host: one TCP connection, framed messages.

The core is synchronous (one batch, one transaction), so the link is too: ``exchange``
sends one message and waits at most ``timeout`` seconds for the answer with the same
field 7 and STAN.  Answers to earlier requests arriving late are logged and dropped.
Every failure is a typed :class:`LinkError` the gateway turns into a decision:

* :class:`LinkDownError`: no connection (refused, reset, closed by the host);
* :class:`LinkTimeoutError`: connected, the answer did not come in time;
* :class:`LinkGarbledError`: bytes that are not a message of the dialect.

After a timeout or garbage the connection is closed (a fresh one, with a sign-on, serves
the next request), so a late answer can never be read as another request's.  Logs name
the MTI, STAN and request id, never field 48 or 55.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable

from backoffice.acquirer.mapping import (
    ECHO,
    SIGN_ON,
    AcquirerConfig,
    Key,
    answers,
    network_fields,
)
from isolink.dialect import Dialect, Fields, MessageFormatError
from isolink.framing import FrameError, FrameReader, frame

log = logging.getLogger("tapsim.acquirer")


class LinkError(Exception):
    """The bank gave no usable answer; ``kind`` is down, timeout or garbled."""

    kind = "error"


class LinkDownError(LinkError):
    kind = "down"


class LinkTimeoutError(LinkError):
    kind = "timeout"


class LinkGarbledError(LinkError):
    kind = "garbled"


class Link:
    """One connection to ``host:port`` (see the module docstring)."""

    def __init__(self, host: str, port: int, dialect: Dialect, config: AcquirerConfig,
                 next_key: Callable[[], Key]) -> None:
        self.host, self.port = host, port
        self.dialect = dialect
        self.config = config
        self._next_key = next_key
        self._sock: socket.socket | None = None
        self._frames = FrameReader(dialect.max_message_bytes)
        self._ready: list[bytes] = []
        self._last = 0.0
        self.stats: dict[str, int] = {"connects": 0, "sent": 0, "answered": 0, "down": 0,
                                      "timeout": 0, "garbled": 0, "late": 0}

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
                self._frames = FrameReader(self.dialect.max_message_bytes)
                self._ready = []

    def _connect(self) -> None:
        try:
            self._sock = socket.create_connection((self.host, self.port),
                                                  timeout=self.config.timeout)
        except OSError as exc:
            self._sock = None
            self.stats["down"] += 1
            raise LinkDownError(f"bank {self.host}:{self.port}: cannot connect: "
                           f"{exc.strerror or exc}") from None
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.stats["connects"] += 1
        self._last = time.monotonic()
        answer = self._exchange(network_fields(SIGN_ON, self._next_key(), self.config), "sign-on")
        if answer.get("39") != "00":
            self.close()
            raise LinkDownError(f"bank {self.host}:{self.port}: sign-on answered "
                                f"{answer.get('39')}")

    def exchange(self, fields: Fields, what: str) -> Fields:
        """Send ``fields``, return the answer; connects (and signs on) first when needed,
        and sends an echo test first when the link was idle longer than ``echo_after``."""
        if self._sock is None:
            self._connect()
        elif time.monotonic() - self._last > self.config.echo_after:
            self._exchange(network_fields(ECHO, self._next_key(), self.config), "echo")
        return self._exchange(fields, what)

    def _exchange(self, fields: Fields, what: str) -> Fields:
        sock = self._sock
        assert sock is not None
        data = frame(self.dialect.encode(fields), self.dialect.max_message_bytes)
        try:
            sock.sendall(data)
        except OSError as exc:
            self.close()
            self.stats["down"] += 1
            raise LinkDownError(f"{what}: MTI {fields['t']} STAN {fields['11']}: send failed: "
                           f"{exc.strerror or exc}") from None
        self.stats["sent"] += 1
        deadline = time.monotonic() + self.config.timeout
        while True:
            raw = self._receive(deadline, fields, what)
            try:
                got = self.dialect.decode(raw)
            except MessageFormatError as exc:
                self.close()
                self.stats["garbled"] += 1
                raise LinkGarbledError(f"{what}: MTI {fields['t']} STAN {fields['11']}: the answer "
                                  f"is not a message of the dialect: {exc}") from None
            if answers(self.dialect, fields, got):
                self.stats["answered"] += 1
                self._last = time.monotonic()
                return got
            self.stats["late"] += 1
            log.info("dropped a late or unmatched answer MTI %s STAN %s (waiting for %s)",
                     got.get("t"), got.get("11"), fields["11"])

    def _receive(self, deadline: float, fields: Fields, what: str) -> bytes:
        sock = self._sock
        assert sock is not None
        while not self._ready:
            left = deadline - time.monotonic()
            if left <= 0:
                self.close()
                self.stats["timeout"] += 1
                raise LinkTimeoutError(f"{what}: MTI {fields['t']} STAN {fields['11']}: no answer "
                                  f"within {self.config.timeout:g} s")
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as exc:
                self.close()
                self.stats["down"] += 1
                raise LinkDownError(f"{what}: MTI {fields['t']} STAN {fields['11']}: connection "
                               f"failed: {exc.strerror or exc}") from None
            if not chunk:
                self.close()
                self.stats["down"] += 1
                raise LinkDownError(f"{what}: MTI {fields['t']} STAN {fields['11']}: the bank "
                               "closed the connection before answering")
            try:
                self._ready += self._frames.receive_data(chunk)
            except FrameError as exc:
                self.close()
                self.stats["garbled"] += 1
                raise LinkGarbledError(f"{what}: MTI {fields['t']} STAN {fields['11']}: bad "
                                  f"framing: {exc}") from None
        return self._ready.pop(0)
