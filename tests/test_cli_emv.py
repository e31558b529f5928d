"""The `tapsim tap`, `tapsim tlv` and `tapsim card` commands, as a user runs them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from emv import tlv
from emv.apdu import ResponseApdu
from tapsim.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_tap_json_trace(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    state = tmp_path / "card.json"
    code, out, _ = run_cli(capsys, "tap", "--card", "sscard3", "--json", "--trace",
                           "--state", str(state), "--date", "2026-11-23")
    assert code == 0
    result = json.loads(out)
    assert result["outcome"] == "approved-offline"
    assert result["aid"] == "A000000333010101"
    assert result["oda"] == "fdda-rsa" and result["oda_ok"] is True
    assert result["atc"] == 1 and len(result["cryptogram"]) == 16
    assert result["pan_masked"] == "623190*********0014"
    assert [a["c"][:8] for a in result["apdus"][:3]] == ["00A40400", "00A40400", "80A80000"]
    # The trace masks the PAN: the clear digits appear nowhere in the output.
    assert "6231900000000000014" not in out
    gpo = ResponseApdu.parse(bytes.fromhex(result["apdus"][2]["r"].replace("*", "0")))
    assert tlv.decode(gpo.data)[0].tag == 0x77
    # The ATC persists in the state file between taps.
    code, out, _ = run_cli(capsys, "tap", "--card", "sscard3", "--json", "--state", str(state))
    assert json.loads(out)["atc"] == 2


def test_tap_human_output_and_decline_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "tap", "--card", "sscard3", "--fresh", "--trace")
    assert code == 0
    assert "GET PROCESSING OPTIONS" in out and "APPROVED-OFFLINE" in out
    assert "9F4B Signed Dynamic Application Data" in out
    code, out, _ = run_cli(capsys, "tap", "--card", "sscard3", "--fresh", "--date", "2031-01-01")
    assert code == 1 and "DECLINED" in out and "card-expired" in out


def test_tap_profile_file_and_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    profile = tmp_path / "mine.json"
    profile.write_text(json.dumps({
        "name": "mine", "description": "test", "pan": "6222020000000000018",
        "expiry": "2030-01-31", "applications": [{"aid": "A000000333010101", "label": "Debit"}],
    }))
    code, out, _ = run_cli(capsys, "tap", "--card", str(profile), "--fresh", "--json")
    assert code == 0 and json.loads(out)["outcome"] == "approved-offline"

    code, _, err = run_cli(capsys, "tap", "--card", "no-such-card", "--fresh")
    assert code == 2 and "no such built-in card" in err and "sscard3" in err

    profile.write_text(json.dumps({
        "name": "bad", "description": "x", "pan": "6222020000000000018", "expiry": "2030-01-31",
        "applications": [{"aid": 42, "label": "Debit"}],
    }))
    code, _, err = run_cli(capsys, "tap", "--card", str(profile), "--fresh")
    assert code == 2 and "mine.json" in err and "$.applications[0].aid" in err

    profile.write_text(json.dumps({
        "name": "bad", "description": "x", "pan": "6222020000000000017", "expiry": "2030-01-31",
        "applications": [{"aid": "A000000333010101", "label": "Debit"}],
    }))
    code, _, err = run_cli(capsys, "tap", "--card", str(profile), "--fresh")
    assert code == 2 and "Luhn" in err and "6222020000000000017" not in err


def test_tlv_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "tlv", "77 0D 82 02 2000 9F36 02 0001 9F27 01 40")
    assert code == 0
    assert "77 Response Message Template Format 2" in out
    assert "9F36 Application Transaction Counter (ATC) [2] 0001" in out
    code, out, _ = run_cli(capsys, "tlv", "--json", "9F5D03000100")
    assert json.loads(out) == [{"tag": "9F5D", "name": "Available Offline Spending Amount (qPBOC)",
                                "length": 3, "value": "000100"}]
    code, _, err = run_cli(capsys, "tlv", "9F3605 0001")
    assert code == 2 and "offset 0" in err and "9F36" in err
    code, _, err = run_cli(capsys, "tlv", "9F3G")
    assert code == 2 and "not hex at character 3" in err


def test_card_list_and_show(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "card", "list")
    assert code == 0 and "sscard3" in out and "unionpay-debit" in out
    code, out, _ = run_cli(capsys, "card", "show", "sscard3", "--json")
    shown = json.loads(out)
    assert shown["pan_masked"] == "623190*********0014"
    assert [a["aid"] for a in shown["applications"]] == ["A000000333010101", "A000000632010105"]
    assert shown["holder"]["category"] == "senior"
    assert "issuer_master_key" not in out and "0123456789ABCDEF" not in out


def test_console_script_is_installed() -> None:
    exe = shutil.which("tapsim", path=str(Path(sys.executable).parent))
    assert exe is not None, "the tapsim console script is not installed in this environment"
    done = subprocess.run([exe, "tap", "--card", "sscard3", "--fresh", "--json"],
                          capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["outcome"] == "approved-offline"
