"""Checks of what a command is given, made before it does any work or writes anything.

Two kinds: argparse types for numbers (a bad value stops the parse: exit 2, the option
named), and checks of paths a command will write (a ``UserError`` at the start of the
run, before any file is opened).  Standard library only, so that every parser may use
them (tapsim/cli.py's fast-start rule).
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from tapsim.errors import UserError

if TYPE_CHECKING:
    import ssl

MAX_AMOUNT = 999_999_999_999
"""The largest amount in minor units: EMV's 12-digit Amount, Authorised (9F02, n12), which
the kernel and the wire messages also hold to."""

DAY_S = 86_400.0


def integer(low: int, high: int, what: str = "") -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` to ``high`` (``what`` names the unit)."""
    unit = f" {what}" if what else ""

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"{text} is out of range: {low:,} to {high:,}{unit}")
        return value

    parse.__name__ = "integer"
    return parse


def number(low: float, high: float, what: str = "") -> Callable[[str], float]:
    """An argparse type: a finite number from ``low`` to ``high`` (no NaN, no infinity)."""
    unit = f" {what}" if what else ""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value) or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is out of range: {low:g} to {high:g}{unit}")
        return value

    parse.__name__ = "number"
    return parse


amount = integer(0, MAX_AMOUNT, "minor units")
"""An amount in minor units (fen for CNY), 0 allowed."""
positive_amount = integer(1, MAX_AMOUNT, "minor units")
"""An amount in minor units that must move money (a deposit)."""


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")  # pragma: no cover - "/" always exists


def check_output_file(path: Path, what: str) -> None:
    """``path`` can be written (created with its missing folders, or replaced), or a
    UserError naming ``what`` (the option) and why; nothing is created here."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} {path}: is a folder, not a file")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise UserError(f"{what} {path}: cannot write it (permission denied)")
        return
    _check_can_create(path.parent, path, what)


def check_output_folder(path: Path, what: str) -> None:
    """``path`` is a folder that exists and can be written in, or can be created."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{what} {path}: is a file, not a folder")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise UserError(f"{what} {path}: cannot write in it (permission denied)")
        return
    _check_can_create(path.parent, path, what)


def _check_can_create(folder: Path, path: Path, what: str) -> None:
    base = _nearest_existing(folder)
    if not base.is_dir():
        raise UserError(f"{what} {path}: {base} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise UserError(f"{what} {path}: cannot write in {base} (permission denied)")


def check_input_file(path: Path, what: str) -> None:
    """``path`` is a file that can be read, or a UserError naming ``what``."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} {path}: no such file")
    if path.is_dir():
        raise UserError(f"{what} {path}: is a folder, not a file")
    if not os.access(path, os.R_OK):
        raise UserError(f"{what} {path}: cannot read it (permission denied)")


class TlsBroker(Protocol):
    """What a broker address of either side offers (terminal.uplink.BrokerSettings,
    backoffice.consumer.link.BrokerAddress): the checks need no more."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...

    @property
    def tls(self) -> bool: ...

    def tls_context(self) -> ssl.SSLContext | None: ...


def check_broker_tls(broker: TlsBroker, ca: Path | None) -> None:
    """``--ca`` readable, and an mqtts:// broker's certificate (host name included) verified
    with one handshake before any password is sent: an untrusted certificate is an error at
    start, not a retry loop."""
    if ca is not None:
        check_input_file(ca, "--ca")
    if not broker.tls:
        return
    from wire.tls import TlsError, check_broker  # noqa: PLC0415 - only mqtts:// needs it

    context = broker.tls_context()
    assert context is not None  # tls is set
    try:
        check_broker(broker.host, broker.port, context)
    except TlsError as exc:
        raise UserError(str(exc)) from None
