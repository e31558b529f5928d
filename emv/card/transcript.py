"""A transcript card: answers the kernel from a recorded exchange with a real card.

A recording is JSON, ``[{"c": hex, "r": hex}, ...]`` (command, response with status word), the
shape ``tapsim tap --json --trace`` prints under ``"apdus"`` (that whole object is accepted as
well).  Users record a real card with their own PC/SC reader or a Proxmark3 and run the kernel
on it as often as they like, with no card and no card-side crypto.

How commands match.  A kernel run differs from the recorded one in what the terminal brings:
its unpredictable number, date and amount ride in the GPO (and GENERATE AC) data.  So:

* commands are matched in order: each command is compared with the recorded ones from the
  position after the last match onward, and the first that matches answers it; recorded
  commands skipped over (a reader that sent GET DATA or selected PSE first) are never used
  again, so the kernel cannot go back in the recording;
* a command matches a recorded one when CLA, INS, P1 and P2 are equal and the data are equal,
  except for the commands that carry terminal data (GPO A8, GENERATE AC AE, INTERNAL
  AUTHENTICATE 88), where only the data length must be equal; Le is not compared;
* a command with no match raises :class:`TranscriptMiss`, naming the command and where the
  recording stood: the run fails clearly instead of inventing an answer.

To make the kernel send what the card saw (so the card's fDDA signature, made over the recorded
unpredictable number and amount, verifies), :meth:`Transcript.terminal_data` gives the terminal
data recorded in the GPO, cut by the PDOL of the recorded SELECT answer: callers build the
transaction (amount, date, unpredictable number) and the TTQ, country and currency from it.

Masked responses (``*`` in place of PAN digits, as ``tapsim tap --trace`` prints them) cannot be
replayed: loading one is an error naming the exchange.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emv import tlv
from emv.apdu import (
    GENERATE_AC,
    GET_PROCESSING_OPTIONS,
    INTERNAL_AUTHENTICATE,
    SELECT,
    ApduError,
    CommandApdu,
)
from emv.dol import parse_dol, split_dol_data
from emv.tlv import TlvError

if TYPE_CHECKING:
    from emv.kernel import TerminalConfig, TransactionInput

TERMINAL_DATA_COMMANDS = frozenset({GET_PROCESSING_OPTIONS, GENERATE_AC, INTERNAL_AUTHENTICATE})


class TranscriptError(ValueError):
    """A recording that cannot be used: which file and which exchange."""


class TranscriptMiss(LookupError):  # noqa: N818 - named for what happened: the recording missed
    """The kernel sent a command the recording has no answer for."""


@dataclass(frozen=True)
class RecordedExchange:
    command: CommandApdu
    raw_command: bytes
    response: bytes


def _hex(value: Any, what: str, source: str) -> bytes:
    if not isinstance(value, str):
        raise TranscriptError(f"{source}: {what} is not a hex string")
    text = value.replace(" ", "").replace(":", "")
    if "*" in text:
        raise TranscriptError(f"{source}: {what} is masked ('*': PAN digits blanked); record "
                              "the card's clear answers to replay it")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise TranscriptError(f"{source}: {what} is not hex") from None


def parse_transcript(data: Any, source: str = "<transcript>") -> list[RecordedExchange]:
    """Exchanges from decoded JSON: a list of {"c", "r"}, or an object with them in "apdus"."""
    if isinstance(data, dict):
        data = data.get("apdus")
    if not isinstance(data, list) or not data:
        raise TranscriptError(f"{source}: want a non-empty JSON list of {{\"c\": hex, \"r\": "
                              "hex}, or an object with one under \"apdus\"")
    out: list[RecordedExchange] = []
    for i, item in enumerate(data):
        where = f"{source}: exchange {i}"
        if not isinstance(item, dict) or "c" not in item or "r" not in item:
            raise TranscriptError(f"{where}: want an object with \"c\" and \"r\"")
        raw = _hex(item["c"], "command", where)
        response = _hex(item["r"], "response", where)
        if len(response) < 2:
            raise TranscriptError(f"{where}: a response ends with two status bytes")
        try:
            command = CommandApdu.parse(raw)
        except ApduError as exc:
            raise TranscriptError(f"{where}: command: {exc}") from None
        out.append(RecordedExchange(command, raw, response))
    return out


def load_transcript(path: Path | str) -> Transcript:
    """Read a recording file; TranscriptError naming the file if it is not one."""
    source = str(path)
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise TranscriptError(f"{source}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise TranscriptError(f"{source}: not JSON: {exc}") from None
    return Transcript(parse_transcript(data, source), source)


def _matches(sent: CommandApdu, recorded: CommandApdu) -> bool:
    if (sent.cla, sent.ins, sent.p1, sent.p2) != (recorded.cla, recorded.ins, recorded.p1,
                                                  recorded.p2):
        return False
    if sent.ins in TERMINAL_DATA_COMMANDS:
        return len(sent.data) == len(recorded.data)
    return sent.data == recorded.data


class Transcript:
    """A recording and its replay position; ``process`` is the card's side of one command."""

    def __init__(self, exchanges: Sequence[RecordedExchange], source: str = "<transcript>",
                 atr: bytes | None = None) -> None:
        self.exchanges = tuple(exchanges)
        self.source = source
        self.atr = atr
        self._next = 0

    def power_on(self) -> bytes:
        """A new tap replays the recording from its start."""
        from emv.card.card import ATR  # noqa: PLC0415 - the virtual card's, when none recorded

        self._next = 0
        return self.atr if self.atr is not None else ATR

    def process(self, command: bytes) -> bytes:
        try:
            sent = CommandApdu.parse(command)
        except ApduError as exc:
            raise TranscriptMiss(f"{self.source}: malformed command {command.hex().upper()}: "
                                 f"{exc}") from None
        for i in range(self._next, len(self.exchanges)):
            if _matches(sent, self.exchanges[i].command):
                self._next = i + 1
                return self.exchanges[i].response
        head = command[:4].hex().upper()
        raise TranscriptMiss(
            f"{self.source}: no recorded answer for {head} (Lc {len(sent.data)}) from exchange "
            f"{self._next} on: the recording lacks this command")

    def terminal_data(self) -> dict[int, bytes]:
        """The terminal data the card was sent in the recorded GPO, by tag (empty if the
        recording has no GPO, or no SELECT answer with a PDOL the data fits)."""
        pdol: bytes | None = None
        for ex in self.exchanges:
            if ex.command.ins == SELECT and ex.response[-2:] == b"\x90\x00":
                try:
                    node = tlv.find(tlv.decode(ex.response[:-2]), 0x9F38)
                except TlvError:
                    node = None
                pdol = node.value if node is not None else pdol
            elif ex.command.ins == GET_PROCESSING_OPTIONS and pdol is not None:
                try:
                    wrapped = tlv.decode(ex.command.data)
                    if len(wrapped) != 1 or wrapped[0].tag != 0x83:
                        return {}
                    return split_dol_data(parse_dol(pdol), wrapped[0].value)
                except (TlvError, ValueError):
                    return {}
        return {}

    def replay_inputs(self, config: TerminalConfig, txn: TransactionInput,
                      ) -> tuple[TerminalConfig, TransactionInput]:
        """``config`` and ``txn`` with what the recording's GPO shows put in their place (TTQ,
        country, currency; amount, other amount, type, date, unpredictable number), so the
        kernel sends what the card signed."""
        data = self.terminal_data()
        swaps: dict[str, Any] = {}
        for tag, name, size in ((0x9F66, "ttq", 4), (0x9F1A, "country", 2),
                                (0x5F2A, "currency", 2)):
            if len(data.get(tag, b"")) == size:
                swaps[name] = data[tag]
        tx: dict[str, Any] = {}
        for tag, name in ((0x9F02, "amount"), (0x9F03, "amount_other")):
            raw = data.get(tag, b"")
            if len(raw) == 6 and raw.hex().isdigit():
                tx[name] = int(raw.hex())
        if len(data.get(0x9C, b"")) == 1:
            tx["transaction_type"] = data[0x9C][0]
        if len(data.get(0x9F37, b"")) == 4:
            tx["unpredictable_number"] = data[0x9F37]
        day = self.recorded_date()
        if day is not None:
            tx["date"], tx["at"] = day, None
        return replace(config, **swaps), replace(txn, **tx)

    def recorded_date(self) -> dt.date | None:
        """The transaction date (9A) the card was sent, when the recording shows it."""
        raw = self.terminal_data().get(0x9A)
        if raw is None or len(raw) != 3:
            return None
        try:
            text = raw.hex()
            return dt.date(2000 + int(text[:2]), int(text[2:4]), int(text[4:6]))
        except ValueError:
            return None
