"""`tapsim terminal run` and `tapsim card serve`: errors, offline runs, and the validator
process end to end against a real broker, including kill -9 mid-burst."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from emv.pan import pan_token
from tapsim.cli import main
from tapsim.commands.tap import DEMO_TOKEN_KEY
from tests.fixtures.mosquitto import Broker, BrokerFactory
from tests.fixtures.mqtt import BO_KEY, SIGNER, Collector, tap_ids
from wire import DenyListSnapshot, topics
from wire.signing import public_key_pem

SSCARD3_TOKEN = pan_token("6231900000000000014", DEMO_TOKEN_KEY)


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["terminal", "run", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("args", "message"), [
    (["--reader", "usb"], "reader must be 'virtual', 'pcsc[:NAME]' or 'transcript:FILE'"),
    (["--broker", "http://x"], "scheme must be mqtt:// or mqtts://"),
    (["--broker", "mqtt://h:99999"], "bad port"),
    (["--broker", "mqtt://h", "--ca", "ca.pem"], "use mqtts://"),
    (["--validator-id", "bus/7"], "validator id 'bus/7'"),
    (["--card", "no-such-card"], "no-such-card"),
    (["--deny-list-key", "/nonexistent.pem"], "/nonexistent.pem"),
])
def test_bad_arguments_exit_2_with_a_message(capsys: pytest.CaptureFixture[str],
                                             tmp_path: Path, args: list[str],
                                             message: str) -> None:
    code, _, err = run_cli(capsys, "--journal", str(tmp_path / "j"), "--taps", "1", *args)
    assert code == 2 and message in err, err


def test_offline_run_prints_one_line_per_tap(capsys: pytest.CaptureFixture[str],
                                             tmp_path: Path) -> None:
    code, out, _ = run_cli(capsys, "--journal", str(tmp_path / "j"), "--taps", "3", "--json")
    assert code == 0
    taps = [json.loads(line) for line in out.splitlines()]
    assert [t["outcome"] for t in taps] == ["accepted", "duplicate", "duplicate"]
    assert [t["seq"] for t in taps] == [1, 2, 3]
    assert taps[0]["beep"] == "2-short" and taps[1]["colour"] == "amber"
    code, out, _ = run_cli(capsys, "--journal", str(tmp_path / "j"), "--taps", "1")
    assert "623190*********0014" in out and "6231900000000000014" not in out


def test_a_journal_in_use_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from terminal.journal import Journal

    with Journal(tmp_path / "j"):
        code, _, err = run_cli(capsys, "--journal", str(tmp_path / "j"), "--taps", "1")
    assert code == 2 and "another validator process" in err


def test_card_serve_refuses_a_bad_address(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["card", "serve", "sscard3", "--vpcd", "host:port"]) == 2
    assert "port must be 1-65535" in capsys.readouterr().err


# -- the validator process against a real broker -------------------------------------

def spawn(tmp_path: Path, broker: Broker, *args: str, password: str | None = None,
          user: str | None = None) -> subprocess.Popen[str]:
    key = tmp_path / "backoffice.pub.pem"
    key.write_bytes(public_key_pem(BO_KEY.public_key()))
    who = f"{user}@" if user else ""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if password:
        env["TAPSIM_MQTT_PASSWORD"] = password
    return subprocess.Popen(
        [sys.executable, "-m", "tapsim.cli", "terminal", "run", "--reader", "virtual",
         "--broker", f"mqtt://{who}{broker.host}:{broker.port}", "--deny-list-key", str(key),
         "--journal", str(tmp_path / "v.journal"), "--validator-id", "V1", "--json", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def journal_tap_ids(path: Path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return [r[0] for r in db.execute("SELECT tap_id FROM taps ORDER BY seq")]
    finally:
        db.close()


@pytest.mark.service
def test_validator_process_uplinks_and_obeys_the_signed_deny_list(
        broker_factory: BrokerFactory, tmp_path: Path) -> None:
    b = broker_factory(validators=["V1"])
    assert b.auth is not None
    snapshot = SIGNER.sign(DenyListSnapshot(version=1, issued_at=dt.datetime.now(dt.UTC),
                                            tokens=[SSCARD3_TOKEN]))

    async def main_() -> list[dict[str, object]]:
        bo = {"username": "backoffice", "password": b.auth.credentials["backoffice"]}  # type: ignore[union-attr]
        async with Collector(b.host, b.port, [topics.SHARED_TAPS], **bo) as c:  # type: ignore[arg-type]
            import aiomqtt

            async with aiomqtt.Client(b.host, b.port, **bo) as pub:  # type: ignore[arg-type]
                await pub.publish(topics.DENY_SNAPSHOT, snapshot, qos=1, retain=True)
            proc = spawn(tmp_path, b, "--taps", "3", "--interval", "1", "--duplicate-window",
                         "0", user="V1", password=b.auth.credentials["V1"])  # type: ignore[union-attr]
            out, err = await asyncio.to_thread(proc.communicate, timeout=60)
            assert proc.returncode == 0, err
            taps = [json.loads(x) for x in out.splitlines()]
            assert await c.wait_for(lambda m: tap_ids(m) == {t["tap_id"] for t in taps})
            return taps

    taps = asyncio.run(main_())
    assert taps[-1]["outcome"] == "deny_listed"  # the retained snapshot arrived on connect
    assert taps[-1]["text"] == "Card blocked - see staff"


@pytest.mark.service
def test_sigkill_mid_burst_then_restart_delivers_every_tap(mosquitto: Broker,
                                                           tmp_path: Path) -> None:
    async def main_() -> None:
        async with Collector(mosquitto.host, mosquitto.port, [topics.TAPS_ALL],
                             client_id="bo", clean=False) as c:
            proc = spawn(tmp_path, mosquitto, "--duplicate-window", "0")
            assert proc.stdout is not None
            shown = []
            for _ in range(40):
                line = await asyncio.to_thread(proc.stdout.readline)
                assert line, proc.stderr.read() if proc.stderr else ""
                shown.append(json.loads(line)["tap_id"])
            proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(proc.communicate)
            # Restart: the new process sends what the old one journaled but did not get out.
            proc = spawn(tmp_path, mosquitto, "--taps", "2", "--duplicate-window", "0")
            _, err = await asyncio.to_thread(proc.communicate, timeout=60)
            assert proc.returncode == 0, err
            journal = journal_tap_ids(tmp_path / "v.journal")
            assert set(shown) <= set(journal)
            assert await c.wait_for(lambda m: tap_ids(m) == set(journal), 20)

    asyncio.run(main_())


@pytest.mark.service
def test_broker_config_then_a_validator_on_that_broker(capsys: pytest.CaptureFixture[str],
                                                      tmp_path: Path) -> None:
    """`tapsim broker config` output runs as is: mosquitto starts, the validator connects."""
    from tests.fixtures.services import find_binary, free_port, missing, wait_port

    if find_binary("mosquitto") is None:
        missing("mosquitto", "install the Debian package 'mosquitto'")
    port = free_port()
    out = tmp_path / "broker"
    assert main(["broker", "config", "--out", str(out), "--validators", "V1,V2",
                 "--port", str(port)]) == 0
    printed = capsys.readouterr().out
    assert "mosquitto -c" in printed
    assert (out / "credentials" / "V1").stat().st_mode & 0o777 == 0o600
    password = (out / "credentials" / "V1").read_text().strip()
    assert password not in printed and password not in (out / "dynamic-security.json").read_text()
    conf = out / "mosquitto.conf"
    # As written (absolute paths, the running user kept when root), from another directory.
    broker = subprocess.Popen([find_binary("mosquitto") or "", "-c", str(conf)], cwd="/",
                              stderr=subprocess.DEVNULL)
    try:
        assert wait_port("127.0.0.1", port)
        proc = subprocess.run(
            [sys.executable, "-m", "tapsim.cli", "terminal", "run", "--validator-id", "V1",
             "--broker", f"mqtt://V1@127.0.0.1:{port}", "--deny-list-key",
             str(out / "backoffice-signing.pub.pem"), "--journal", str(tmp_path / "j"),
             "--taps", "2", "--drain", "1"],
            env={**os.environ, "TAPSIM_MQTT_PASSWORD": password}, capture_output=True,
            text=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr
        with contextlib.closing(sqlite3.connect(tmp_path / "j")) as db:  # both taps PUBACKed
            assert db.execute("SELECT COUNT(*) FROM taps WHERE sent_us IS NOT NULL"
                              ).fetchone() == (2,)
        # No back office runs here: the validator waits --drain for its confirmation, then
        # says the taps stay journaled.
        assert "2 tap(s) not yet confirmed by the back office" in proc.stderr
    finally:
        broker.terminate()
        broker.wait()


def test_virtual_card_counters_survive_validator_restarts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A restarted validator's virtual card goes on counting, so no ATC is offered twice."""
    def one_tap(*extra: str) -> dict[str, object]:
        assert main(["terminal", "run", "--card", "sscard3", "--taps", "1", "--json",
                     "--journal", str(tmp_path / "j"), "--duplicate-window", "0", *extra]) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    assert [one_tap()["atc"], one_tap()["atc"]] == [1, 2]
    assert one_tap("--fresh-card")["atc"] == 1
    assert one_tap()["atc"] == 3  # the fresh card saved nothing
