"""Shared by the ISO 8583 tests: a database with issued cards, `tapsim issuer run` as a real
process, and a blocking client that speaks the dialect."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from emv.card.profile import load_profile
from emv.pan import pan_token
from isolink.dialect import Dialect, load_dialect
from isolink.framing import FrameReader, frame
from isolink.messages import icc_data, transmission_time
from isolink.taps import CardTapper
from tapsim.cli import main
from tapsim.commands.tap import token_key

ROOT = Path(__file__).resolve().parent.parent
DIALECT: Dialect = load_dialect()
ACQUIRER = "10000000001"


def issue(db: Path | str, profile: str, *, balance: int = 10_000, activate: bool = True,
          pan: str | None = None) -> None:
    """`tapsim card issue` into ``db`` (in process: the command the user runs)."""
    args = ["card", "issue", "--profile", profile, "--balance", str(balance), "--db", str(db),
            *(["--pan", pan] if pan else [])]
    assert main([*args, *(["--activate"] if activate else [])]) == 0


def token(profile: str) -> str:
    return pan_token(load_profile(profile).pan, token_key())


@dataclass
class Host:
    proc: subprocess.Popen[str]
    port: int
    db: Path | str
    stderr_path: Path
    ready: str = ""  # the host's ready: line

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)


def start_host(db: Path | str, tmp: Path, *extra: str) -> Host:
    """`tapsim issuer run` on a free port; returns once its ready: line is printed."""
    err = tmp / f"host-{time.monotonic_ns()}.err"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tapsim.cli", "issuer", "run", "--listen", "127.0.0.1:0",
         "--db", str(db), *extra],
        stdout=subprocess.PIPE, stderr=err.open("w"), text=True, env=env, cwd=tmp,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("ready:"):
        proc.kill()
        raise AssertionError(f"no ready line: {line!r} {err.read_text()}")
    port = int(line.split(" on 127.0.0.1:")[1].split()[0])
    return Host(proc, port, db, err, line)


@contextmanager
def running_host(db: Path, tmp: Path, *extra: str) -> Iterator[Host]:
    host = start_host(db, tmp, *extra)
    try:
        yield host
    finally:
        if host.proc.poll() is None:
            host.proc.kill()
            host.proc.wait()


class Client:
    """One TCP connection to a host: send fields or raw bytes, read whole answers."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.frames = FrameReader()
        self._ready: list[bytes] = []

    def close(self) -> None:
        self.sock.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, fields: dict[str, Any]) -> bytes:
        raw = DIALECT.encode(fields)
        self.sock.sendall(frame(raw))
        return raw

    def receive_raw(self) -> bytes:
        """The next whole answer (raises socket.timeout if none comes)."""
        while not self._ready:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the host closed the connection")
            self._ready += self.frames.receive_data(data)
        return self._ready.pop(0)

    def receive(self) -> dict[str, Any]:
        return DIALECT.decode(self.receive_raw())

    def ask(self, fields: dict[str, Any]) -> dict[str, Any]:
        self.send(fields)
        return self.receive()


_stan = [0]


def next_stan() -> str:
    _stan[0] += 1
    return f"{_stan[0] % 1_000_000:06d}"


def authorization(tapper: CardTapper, tok: str, *, mti: str = "0100",
                  kind: str = "account_verification", amount: int = 0,
                  at: datetime | None = None, stan: str | None = None,
                  original: str | None = None) -> dict[str, Any]:
    """A request with a fresh tap of ``tapper``'s card (its ATC goes up by one)."""
    at = at or datetime.now(UTC)
    values = tapper.tap(amount=amount, currency="156", country="156", day=date.today(),
                        unpredictable=os.urandom(4))
    stan = stan or next_stan()
    fields = {
        "t": mti, "3": "000000", "4": f"{amount:012d}", "7": transmission_time(at), "11": stan,
        "25": DIALECT.kind_code(kind), "32": ACQUIRER, "37": f"000000{stan}",
        "41": "VAL00001", "42": "tapsim-transit".ljust(15), "48": tok, "49": "156",
        "55": icc_data(values),
    }  # fmt: skip
    if original is not None:
        fields["90"] = original
    return fields
