"""Card readers: one small protocol, so the kernel runs unchanged over any of them.

A reader powers the card in its field (``power_on`` -> ATR) and exchanges APDUs
(``transceive``).  :class:`VirtualReader` holds an in-process
:class:`~emv.card.card.VirtualCard`; :class:`PcscReader` talks to a PC/SC reader
through pyscard (a USB contactless reader, or pcscd's vpcd driver serving a virtual
card over TCP, see :mod:`terminal.vpcd`).  Contactless cards speak T=1.
"""

from __future__ import annotations

import contextlib
from typing import Any, Protocol, runtime_checkable

from emv.card.card import VirtualCard
from emv.card.transcript import Transcript, TranscriptError, TranscriptMiss, load_transcript
from emv.kernel import CardRemoved


class ReaderError(RuntimeError):
    """No card in the field, the card went away, or the reader failed; says which reader."""

    def __init__(self, reader: str, message: str) -> None:
        self.reader = reader
        super().__init__(f"reader {reader!r}: {message}")


class CardGoneError(ReaderError, CardRemoved):
    """The card left the field mid-transaction.  Also the kernel's ``CardRemoved``, so
    ``emv.kernel.run`` ends the tap as try-again (and keeps a torn e-purse purchase pending
    in the PSAM for the next tap) instead of losing track of it."""


@runtime_checkable
class Reader(Protocol):
    name: str

    def power_on(self) -> bytes:
        """Activate the card in the field; its ATR.  ReaderError when there is none."""
        ...

    def transceive(self, apdu: bytes) -> bytes:
        """Send one command APDU, return the response APDU (data || SW1 SW2)."""
        ...

    def power_off(self) -> None:
        ...

    def close(self) -> None:
        """Let go of the reader (PC/SC context); the reader is not used after."""
        ...


class VirtualReader:
    """A reader whose field holds an in-process virtual card (or nothing)."""

    def __init__(self, card: VirtualCard | None = None, name: str = "virtual") -> None:
        self.name = name
        self.card = card
        self._powered = False

    def present(self, card: VirtualCard | None) -> None:
        """Put a card in the field (None: take it away)."""
        self.card = card
        self._powered = False

    def power_on(self) -> bytes:
        if self.card is None:
            raise ReaderError(self.name, "no card in the field")
        self._powered = True
        return self.card.power_on()

    def transceive(self, apdu: bytes) -> bytes:
        if self.card is None or not self._powered:
            raise CardGoneError(self.name, "no powered card in the field")
        return self.card.process(apdu)

    def power_off(self) -> None:
        self._powered = False

    def close(self) -> None:
        self.power_off()


class TranscriptReader:
    """A reader whose field holds a recorded card (``emv.card.transcript``): every power-on
    replays the recording from its start; a command it lacks is a ReaderError saying so."""

    def __init__(self, transcript: Transcript, name: str = "transcript") -> None:
        self.name = name
        self.transcript = transcript
        self._powered = False

    def power_on(self) -> bytes:
        self._powered = True
        return self.transcript.power_on()

    def transceive(self, apdu: bytes) -> bytes:
        if not self._powered:
            raise CardGoneError(self.name, "no powered card in the field")
        try:
            return self.transcript.process(apdu)
        except TranscriptMiss as exc:
            raise ReaderError(self.name, str(exc)) from None

    def power_off(self) -> None:
        self._powered = False

    def close(self) -> None:
        self.power_off()


def pcsc_reader_names() -> list[str]:
    """Names of the PC/SC readers pcscd knows (empty when none or no pcscd)."""
    from smartcard.System import readers  # noqa: PLC0415 - optional extra

    try:
        return [str(r) for r in readers()]
    except _pcsc_errors():
        return []


def _pcsc_errors() -> tuple[type[Exception], ...]:
    """pyscard's errors for "cannot talk to pcscd" (no daemon, no readers, no context)."""
    from smartcard.Exceptions import ListReadersException  # noqa: PLC0415
    from smartcard.pcsc.PCSCExceptions import BaseSCardException  # noqa: PLC0415

    return (ListReadersException, BaseSCardException)


class PcscReader:
    """A PC/SC reader through pyscard; ``name`` picks the first reader containing it.

    pyscard is the optional ``pcsc`` extra (it builds against libpcsclite); importing
    this module without it is fine, constructing a PcscReader is not.
    """

    def __init__(self, name: str = "") -> None:
        try:
            from smartcard.System import readers  # noqa: PLC0415 - optional extra
        except ImportError:
            raise ReaderError(name or "pcsc", "pyscard is not installed "
                                              "(pip install 'tapsim[pcsc]')") from None
        try:
            found = [r for r in readers() if name in str(r)]
        except _pcsc_errors() as exc:
            raise ReaderError(name or "pcsc", f"cannot list PC/SC readers (is pcscd running?): "
                                              f"{exc}") from None
        if not found:
            raise ReaderError(name or "pcsc", "no such PC/SC reader")
        self._reader: Any = found[0]
        self.name = str(found[0])
        self._conn: Any = None
        self._connected = False

    def power_on(self) -> bytes:
        from smartcard.CardConnection import CardConnection  # noqa: PLC0415
        from smartcard.Exceptions import CardConnectionException, NoCardException  # noqa: PLC0415

        if self._conn is None:  # one PC/SC context for the reader's life, not one per tap
            self._conn = self._reader.createConnection()
        self.power_off()
        try:
            self._conn.connect(CardConnection.T1_protocol)
        except NoCardException:
            raise ReaderError(self.name, "no card in the field") from None
        except CardConnectionException as exc:
            raise ReaderError(self.name, f"cannot connect T=1: {exc}") from None
        self._connected = True
        return bytes(self._conn.getATR())

    def transceive(self, apdu: bytes) -> bytes:
        from smartcard.Exceptions import CardConnectionException  # noqa: PLC0415

        if self._conn is None or not self._connected:
            raise CardGoneError(self.name, "no card connected (power_on first)")
        try:
            data, sw1, sw2 = self._conn.transmit(list(apdu))
        except CardConnectionException as exc:
            raise CardGoneError(self.name, f"card went away: {exc}") from None
        return bytes(data) + bytes((sw1, sw2))

    def power_off(self) -> None:
        from smartcard.Exceptions import CardConnectionException  # noqa: PLC0415

        if self._conn is not None and self._connected:
            with contextlib.suppress(CardConnectionException):
                self._conn.disconnect()
        self._connected = False

    def close(self) -> None:
        """Release the PC/SC context (before pcscd goes away, not at garbage collection)."""
        from smartcard.Exceptions import CardConnectionException  # noqa: PLC0415

        self.power_off()
        if self._conn is not None:
            with contextlib.suppress(CardConnectionException):
                self._conn.release()
            self._conn = None


def open_reader(spec: str, card: VirtualCard | None = None) -> Reader:
    """``virtual``, ``pcsc[:NAME]`` (NAME: part of the reader's name) or ``transcript:FILE``
    (a recorded card, JSON as ``emv.card.transcript`` reads it) -> a reader."""
    kind, _, name = spec.partition(":")
    if kind == "virtual":
        return VirtualReader(card, name=name or "virtual")
    if kind == "pcsc":
        return PcscReader(name)
    if kind == "transcript" and name:
        try:
            return TranscriptReader(load_transcript(name), name=f"transcript:{name}")
        except TranscriptError as exc:
            raise ReaderError(spec, str(exc)) from None
    raise ReaderError(spec, "reader must be 'virtual', 'pcsc[:NAME]' or 'transcript:FILE'")
