"""End to end through real services: a card served to pcscd over vpcd, tapped through PC/SC
by `tapsim terminal run`, carried by Mosquitto (credentials and ACLs), charged by
`tapsim backoffice run` into the ledger."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backoffice.storage import open_store, sqlite_url
from tapsim.cli import main
from tests.fixtures.backoffice import Proc, exactly_once, journal_accepted, ledger_fares
from tests.fixtures.mosquitto import BrokerFactory
from tests.fixtures.mqtt import BO_KEY
from tests.fixtures.pcsc import ServeCard
from wire.signing import private_key_pem, public_key_pem

pytestmark = pytest.mark.service


def keys(tmp_path: Path) -> tuple[Path, Path]:
    private, public = tmp_path / "bo-signing.pem", tmp_path / "bo-signing.pub.pem"
    private.write_bytes(private_key_pem(BO_KEY))
    public.write_bytes(public_key_pem(BO_KEY.public_key()))
    return private, public


def test_a_card_tapped_over_pcsc_is_charged_in_the_ledger(
        broker_factory: BrokerFactory, pcscd: str, served_card: ServeCard,
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    b = broker_factory(validators=["bus-001"])
    assert b.auth is not None
    url = sqlite_url(tmp_path / 'bo.db')
    assert main(["card", "issue", "--profile", "unionpay-debit", "--balance", "5000",
                 "--activate", "--db", url]) == 0
    capsys.readouterr()
    private, public = keys(tmp_path)
    bo = Proc("backoffice", ["backoffice", "run", "--broker", f"mqtt://backoffice@{b.host}:"
                             f"{b.port}", "--db", url, "--signing-key", str(private), "--json"],
              tmp_path, {"TAPSIM_MQTT_PASSWORD": b.auth.credentials["backoffice"]})
    try:
        bo.wait_for_line("ready:")
        served_card("unionpay-debit")
        journal = tmp_path / "bus-001.journal"
        validator = Proc("bus-001", [
            "terminal", "run", "--reader", f"pcsc:{pcscd}", "--validator-id", "bus-001",
            "--broker", f"mqtt://bus-001@{b.host}:{b.port}", "--deny-list-key", str(public),
            "--journal", str(journal), "--stop-id", "S01", "--route-id", "1", "--taps", "2",
            "--duplicate-window", "0", "--json"],
            tmp_path, {"TAPSIM_MQTT_PASSWORD": b.auth.credentials["bus-001"]})
        assert validator.proc.wait(90) == 0, validator.stderr()
        shown = [json.loads(line) for line in validator.lines()]
        assert [t["outcome"] for t in shown] == ["accepted", "accepted"], shown
        assert all(t["pan_masked"] == "622202*********0018" for t in shown)
        accepted = journal_accepted(journal)
        assert accepted == {t["tap_id"] for t in shown}

        import time

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            store = open_store(url)
            try:
                if {r.tap_id for r in store.tap_rows()} == accepted:
                    break
            finally:
                store.close()
            time.sleep(0.1)
    finally:
        assert bo.stop() == 0, bo.stderr()
    summary = json.loads(bo.lines()[-1])
    assert summary["ingested"] == 2 and summary["dead_letters"] == {}
    store = open_store(url)
    try:
        exactly_once(store, [journal])
        rows = store.tap_rows()
        assert ledger_fares(store) == {r.tap_id: 1 for r in rows if r.amount}
        assert rows[0].amount == 200 and rows[0].fare_media == "cemv"  # 2.00 CNY, QuickPass
        assert "6222020000000000018" not in (tmp_path / "bo.db").read_bytes().decode("latin-1")
    finally:
        store.close()
