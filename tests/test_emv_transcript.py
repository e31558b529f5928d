"""The transcript card: a recorded exchange answers the kernel; commands match by header and
order (terminal data by length); what the recording lacks fails clearly."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from emv import tlv
from emv.card.card import ATR, VirtualCard
from emv.card.image import personalise
from emv.card.profile import load_profile
from emv.card.transcript import (
    Transcript,
    TranscriptError,
    TranscriptMiss,
    load_transcript,
    parse_transcript,
)
from emv.kernel import Exchange, Kernel, Outcome, TerminalConfig, TransactionInput, run
from emv.oda import builtin_test_ca_keys
from tapsim.cli import main
from terminal.readers import ReaderError, TranscriptReader, open_reader

DAY = dt.date(2026, 11, 23)
UN = bytes.fromhex("0A0B0C0D")


def record(card: str = "sscard3", amount: int = 200) -> list[dict[str, str]]:
    vc = VirtualCard(personalise(load_profile(card)))
    vc.power_on()
    trace: list[Exchange] = []
    cfg = TerminalConfig(ca_keys=builtin_test_ca_keys(), token_key=b"k" * 32)
    run(Kernel(cfg, TransactionInput(amount=amount, date=DAY, unpredictable_number=UN)),
        vc.process, trace)
    return [{"c": e.command.hex(), "r": e.response.hex()} for e in trace]


def replay(recording: object, amount: int = 999, date: dt.date = dt.date(2030, 1, 1),
           ) -> tuple[Transcript, Outcome, list[Exchange], dict[str, object]]:
    transcript = Transcript(parse_transcript(recording))
    cfg = TerminalConfig(ca_keys=builtin_test_ca_keys(), token_key=b"k" * 32)
    txn = TransactionInput(amount=amount, date=date, unpredictable_number=bytes(4))
    cfg, txn = transcript.replay_inputs(cfg, txn)
    transcript.power_on()
    trace: list[Exchange] = []
    result = run(Kernel(cfg, txn), transcript.process, trace)
    return transcript, result.outcome, trace, vars(result)


@pytest.mark.parametrize("card", ["sscard3", "sscard3-sm", "unionpay-debit"])
def test_a_recorded_tap_replays_to_the_same_outcome_with_its_fdda(card: str) -> None:
    recording = record(card)
    transcript, outcome, trace, result = replay(recording)
    assert outcome is Outcome.APPROVED_OFFLINE and result["oda_ok"] is True
    # The recording's terminal data were used: the commands are the recorded bytes.
    assert [e.command.hex() for e in trace] == [x["c"] for x in recording]
    assert transcript.recorded_date() == DAY and result["ac_data"]["9F37"] == UN.hex().upper()


def test_terminal_data_differing_from_the_recording_still_matches_by_length() -> None:
    recording = record()
    transcript = Transcript(parse_transcript(recording))
    transcript.power_on()
    cfg = TerminalConfig(ca_keys=builtin_test_ca_keys(), token_key=b"k" * 32)
    txn = TransactionInput(amount=200, date=DAY, unpredictable_number=bytes.fromhex("FFFFFFFF"))
    result = run(Kernel(cfg, txn), transcript.process)
    # The GPO answer is the recorded one; its signature covers the recorded UN, not this one.
    assert result.outcome is Outcome.DECLINED and result.reason == "oda-failed: bad-hash"


def test_commands_the_kernel_does_not_send_are_skipped() -> None:
    recording = record()
    extra = {"c": "80CA9F3600", "r": "9F360200019000"}  # a reader's GET DATA ATC
    recording.insert(2, extra)
    recording.insert(0, {"c": "00A404000E315041592E5359532E444446303100", "r": "6A82"})
    _, outcome, trace, _ = replay(recording)
    assert outcome is Outcome.APPROVED_OFFLINE and len(trace) == len(recording) - 2


def test_a_command_the_recording_lacks_fails_clearly() -> None:
    recording = record()
    del recording[5]  # READ RECORD SFI 2 record 2
    with pytest.raises(TranscriptMiss) as info:
        replay(recording)
    assert "no recorded answer for 00B20214" in str(info.value)
    assert "the recording lacks this command" in str(info.value)


def test_no_going_back_in_the_recording() -> None:
    recording = record()
    transcript = Transcript(parse_transcript(recording))
    transcript.power_on()
    transcript.process(bytes.fromhex(recording[1]["c"]))  # SELECT AID, skipping PPSE
    with pytest.raises(TranscriptMiss):
        transcript.process(bytes.fromhex(recording[0]["c"]))
    assert transcript.power_on() == ATR  # a new tap starts over
    assert transcript.process(bytes.fromhex(recording[0]["c"])) == bytes.fromhex(recording[0]["r"])


@pytest.mark.parametrize(("data", "message"), [
    ([], "non-empty JSON list"),
    ({"outcome": "declined"}, "non-empty JSON list"),
    ([{"c": "00A4"}], "exchange 0: want an object"),
    ([{"c": "00A40400", "r": "9F36**9000"}], "masked"),
    ([{"c": "zz", "r": "9000"}], "command is not hex"),
    ([{"c": "00A40400", "r": "90"}], "two status bytes"),
    ([{"c": "00", "r": "9000"}], "exchange 0: command"),
])
def test_bad_recordings_are_refused(data: object, message: str) -> None:
    with pytest.raises(TranscriptError) as info:
        parse_transcript(data, "rec.json")
    assert str(info.value).startswith("rec.json") and message in str(info.value)


def test_the_tap_trace_object_is_accepted_as_it_is() -> None:
    recording = record()
    _, outcome, _, _ = replay({"outcome": "approved-offline", "apdus": recording})
    assert outcome is Outcome.APPROVED_OFFLINE


def test_tapsim_tap_records_and_replays(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    rec = tmp_path / "rec.json"
    assert main(["tap", "--card", "sscard3", "--fresh", "--record", str(rec), "--date",
                 "2026-11-23", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert "apdus" not in first  # --record alone prints no trace
    assert main(["tap", "--transcript", str(rec), "--json", "--trace"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["outcome"] == "approved-offline" and again["cryptogram"] == first["cryptogram"]
    assert "6231900000000000014" not in json.dumps(again)  # the trace stays masked
    masked = tmp_path / "masked.json"
    masked.write_text(json.dumps(again))
    assert main(["tap", "--transcript", str(masked)]) == 2
    assert "masked" in capsys.readouterr().err
    short = json.loads(rec.read_text())[:4]
    rec.write_text(json.dumps(short))
    assert main(["tap", "--transcript", str(rec)]) == 2
    assert "the recording lacks this command" in capsys.readouterr().err


def test_reader_adapter(tmp_path: Path) -> None:
    rec = tmp_path / "rec.json"
    recording = record()
    rec.write_text(json.dumps(recording))
    reader = open_reader(f"transcript:{rec}")
    assert isinstance(reader, TranscriptReader)
    assert reader.power_on() == ATR
    assert reader.transceive(bytes.fromhex(recording[0]["c"])) == bytes.fromhex(recording[0]["r"])
    with pytest.raises(ReaderError, match="the recording lacks this command"):
        reader.transceive(bytes.fromhex("80CA9F1700"))
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    with pytest.raises(ReaderError, match="not JSON"):
        open_reader(f"transcript:{bad}")
    with pytest.raises(ReaderError, match="cannot read"):
        open_reader(f"transcript:{tmp_path / 'missing.json'}")
    assert load_transcript(rec).exchanges[0].raw_command == bytes.fromhex(recording[0]["c"])


def test_the_validator_taps_a_transcript_reader(tmp_path: Path) -> None:
    """A recorded tap replayed under the validator, with the validator's unpredictable number
    and date the recording's, is accepted and journaled like the card's own tap."""
    from terminal.denylist import DenyList
    from terminal.journal import Journal
    from terminal.validator import Validator, ValidatorConfig
    from tests.fixtures.terminal import T0, TERMINAL, StepClock

    vc = VirtualCard(personalise(load_profile("sscard3")))
    vc.power_on()
    trace: list[Exchange] = []
    run(Kernel(TERMINAL, TransactionInput(amount=200, date=T0.date(),
                                          unpredictable_number=bytes.fromhex("00000001"))),
        vc.process, trace)
    reader = TranscriptReader(Transcript(parse_transcript(
        [{"c": e.command.hex(), "r": e.response.hex()} for e in trace])))
    validator = Validator(ValidatorConfig(validator_id="V1"), TERMINAL, Journal(tmp_path / "j"),
                          DenyList(), clock=StepClock(),
                          unpredictable=lambda: bytes.fromhex("00000001"))
    event = validator.tap(reader)
    assert event.result is not None and event.result.oda_ok is True
    recorded_ac = tlv.flatten(tlv.decode(trace[2].response[:-2]))[0x9F26]
    assert event.record is not None and event.record.cryptogram == recorded_ac
    assert event.verdict is not None and event.verdict.outcome.value == "accepted"
