"""`tapsim broker config`: every input is checked before anything is written, and each bad
one is a one-line error naming it (exit 2, no traceback)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tapsim.cli import main
from tests.fixtures.services import free_port


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something already listens on (as the system's mosquitto on 1883 does)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["broker", "config", *args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.err


@pytest.mark.parametrize("port", ["70000", "0", "-1"])
def test_port_out_of_range(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                           port: str) -> None:
    code, err = run(capsys, "--out", str(tmp_path / "o"), "--validators", "V1", "--port", port)
    assert code == 2 and f"--port {port}" in err and "1-65535" in err
    assert not (tmp_path / "o").exists()


def test_tls_port_out_of_range(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = run(capsys, "--out", str(tmp_path / "o"), "--validators", "V1",
                    "--port", str(free_port()), "--tls-port", "65536")
    assert code == 2 and "--tls-port 65536" in err
    assert not (tmp_path / "o").exists()


def test_port_in_use(capsys: pytest.CaptureFixture[str], tmp_path: Path, busy_port: int) -> None:
    code, err = run(capsys, "--out", str(tmp_path / "o"), "--validators", "V1",
                    "--port", str(busy_port))
    assert code == 2 and f"--port {busy_port}" in err and "in use" in err
    assert not (tmp_path / "o").exists()


def test_out_under_a_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    code, err = run(capsys, "--out", str(tmp_path / "f" / "o"), "--validators", "V1",
                    "--port", str(free_port()))
    assert code == 2 and "--out" in err and "not a directory" in err


def test_out_is_a_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    code, err = run(capsys, "--out", str(tmp_path / "f"), "--validators", "V1",
                    "--port", str(free_port()))
    assert code == 2 and "--out" in err and "not a directory" in err
    assert (tmp_path / "f").read_text() == "x"


def test_bad_validator_id(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = run(capsys, "--out", str(tmp_path / "o"), "--validators", "V1,bus/2",
                    "--port", str(free_port()))
    assert code == 2 and "bus/2" in err
    assert not (tmp_path / "o").exists()


def test_validator_named_like_the_backoffice(capsys: pytest.CaptureFixture[str],
                                             tmp_path: Path) -> None:
    code, err = run(capsys, "--out", str(tmp_path / "o"), "--validators", "backoffice",
                    "--port", str(free_port()))
    assert code == 2 and "backoffice" in err
    assert not (tmp_path / "o").exists()


def test_tls_only_without_tls_port(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = run(capsys, "--out", str(tmp_path / "o"), "--validators", "V1", "--tls-only")
    assert code == 2 and "--tls-only" in err
    assert not (tmp_path / "o").exists()
