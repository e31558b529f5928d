"""Counters that never go back: a virtual card's ATC and the PSAM's serial are on disk before
the tap is journaled or shown, so a validator killed right after a tap (journaled, shown,
before anything else) offers the next tap a counter the back office has not seen."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tapsim.cli import main
from terminal.journal import Journal
from wire import TapRecord, decode


class Killed(BaseException):
    """Stands for kill -9 right after the tap's journal row is on disk."""


def journaled(path: Path) -> list[TapRecord]:
    with Journal(path, lock=False) as j:
        return [decode(e.payload, TapRecord) for e in j.entries()]


def tap(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, Any]:
    assert main(["terminal", "run", "--taps", "1", "--json", "--journal", str(tmp_path / "j"),
                 "--duplicate-window", "0", *extra]) == 0
    out: dict[str, Any] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    return out


def test_an_atc_is_never_offered_twice_after_a_crash(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    assert tap(tmp_path, capsys, "--card", "sscard3")["atc"] == 1
    real = Journal.append

    def append(self: Journal, *args: Any, **kw: Any) -> None:
        real(self, *args, **kw)
        raise Killed

    monkeypatch.setattr(Journal, "append", append)
    with pytest.raises(Killed):
        main(["terminal", "run", "--card", "sscard3", "--taps", "1", "--journal",
              str(tmp_path / "j"), "--duplicate-window", "0"])
    monkeypatch.setattr(Journal, "append", real)
    capsys.readouterr()
    assert [r.atc for r in journaled(tmp_path / "j")] == [1, 2]  # the crashed tap stands
    assert tap(tmp_path, capsys, "--card", "sscard3")["atc"] == 3


def test_a_psam_serial_is_never_used_twice_after_a_crash(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    args = ("--card", "sscard3", "--prefer", "epurse")
    first = tap(tmp_path, capsys, *args)
    real = Journal.append

    def append(self: Journal, *a: Any, **kw: Any) -> None:
        real(self, *a, **kw)
        raise Killed

    monkeypatch.setattr(Journal, "append", append)
    with pytest.raises(Killed):
        main(["terminal", "run", "--taps", "1", "--journal", str(tmp_path / "j"),
              "--duplicate-window", "0", *args])
    monkeypatch.setattr(Journal, "append", real)
    capsys.readouterr()
    tap(tmp_path, capsys, *args)
    recs = journaled(tmp_path / "j")
    assert first["outcome"] == "accepted" and all(r.method.value == "epurse" for r in recs)
    serials = [r.psam_serial for r in recs]
    purse = [r.epurse_serial for r in recs]
    assert len(serials) == 3 and len(set(serials)) == 3, serials
    assert len(set(purse)) == 3, purse
