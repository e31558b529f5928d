"""`tapsim broker config` as the README uses it: the written config starts a real broker
from any directory, and a validator with its own password gets its taps through."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tapsim.cli import main
from tests.fixtures.mosquitto import _binary
from tests.fixtures.services import free_port, wait_port


def test_broker_config_runs_and_a_validator_publishes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    binary = _binary()
    port = free_port()
    monkeypatch.chdir(tmp_path)
    assert main(["broker", "config", "--out", "brk", "--validators", "bus-001,bus-002",
                 "--port", str(port)]) == 0
    capsys.readouterr()
    conf = (tmp_path / "brk" / "mosquitto.conf").read_text()
    assert str(tmp_path / "brk") in conf  # absolute paths: the broker may start anywhere
    broker = subprocess.Popen([binary, "-c", str(tmp_path / "brk" / "mosquitto.conf")],
                              cwd="/", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_port("127.0.0.1", port, 10.0), broker.stderr.read() if broker.stderr else ""
        env = dict(os.environ,
                   TAPSIM_MQTT_PASSWORD=(tmp_path / "brk/credentials/bus-001").read_text().strip())
        done = subprocess.run(
            [sys.executable, "-m", "tapsim.cli", "terminal", "run", "--validator-id", "bus-001",
             "--broker", f"mqtt://bus-001@127.0.0.1:{port}", "--card", "sscard3", "--taps", "2",
             "--duplicate-window", "0", "--journal", str(tmp_path / "bus-001.journal"),
             "--deny-list-key", str(tmp_path / "brk/backoffice-signing.pub.pem")],
            capture_output=True, text=True, env=env, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        assert done.stdout.count("GREEN") == 2
        assert "not yet sent" not in done.stderr, done.stderr
    finally:
        broker.terminate()
        broker.wait(10)
