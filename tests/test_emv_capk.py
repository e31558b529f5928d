"""CA public keys from a file: real published keys load with their checksums; every bad line is
an error naming it; the kernel trusts exactly the file's keys (`tapsim tap --ca-keys`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emv.capk import CaKeyEntry, CaKeyFileError, format_line, load_ca_keys, parse_ca_keys
from emv.crypto import testkeys
from emv.crypto.testkeys_sm2 import SM2_TEST_CA_INDEX, SM2_TEST_CA_RID, sm2_test_ca
from tapsim.cli import main

DATA = Path(__file__).parent / "data" / "capk"
PROXMARK = DATA / "proxmark3-capk-subset.txt"  # source: the file's header


def test_real_published_keys_load_with_their_checksums() -> None:
    entries = parse_ca_keys(PROXMARK.read_text(), str(PROXMARK))
    got = {(e.rid.hex().upper(), e.index, len(e.key) * 8) for e in entries}
    assert got == {
        ("A000000003", 0x07, 1152), ("A000000003", 0x08, 1408), ("A000000003", 0x09, 1984),
        ("A000000003", 0x95, 1152), ("A000000003", 0x92, 1408), ("A000000003", 0x94, 1984),
        ("A000000004", 0x06, 1984), ("A000000004", 0xF1, 1408),
    }
    keys = load_ca_keys(PROXMARK)
    assert len(keys.rsa) == 8 and not keys.sm2
    assert keys.rsa.find(bytes.fromhex("A000000003"), 0x09) is not None


def real_lines() -> list[str]:
    return [ln for ln in PROXMARK.read_text().splitlines() if ln and not ln.startswith("#")]


def error_of(text: str) -> CaKeyFileError:
    with pytest.raises(CaKeyFileError) as info:
        parse_ca_keys(text, "keys.txt")
    return info.value


def test_a_changed_digit_fails_the_checksum_and_names_the_line() -> None:
    line = real_lines()[1]
    fields = line.split()
    key = fields[5]
    fields[5] = key[:10] + ("0" if key[10] != "0" else "1") + key[11:]
    err = error_of("# header\n\n" + " ".join(fields) + "\n")
    assert err.line == 3 and str(err).startswith("keys.txt:3: checksum mismatch")
    assert "A000000003" in str(err) and "index 08" in str(err)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda f: f[:7], "7 fields, want 8"),
    (lambda f: ["a0:00:00:03", *f[1:]], "RID is 4 bytes, want 5"),
    (lambda f: [f[0], "0g", *f[2:]], "index is not hex"),
    (lambda f: [f[0], "0708", *f[2:]], "index is one byte"),
    (lambda f: [*f[:2], "171331", *f[3:]], "not a date"),
    (lambda f: [*f[:2], "1712", *f[3:]], "not YYMMDD"),
    (lambda f: [*f[:3], "dsa", *f[4:]], "algorithm 'dsa'"),
    (lambda f: [*f[:4], "05", *f[5:]], "RSA key: RSA exponent must be 03 or 010001"),
    (lambda f: [*f[:6], "md5", f[7]], "checksum algorithm 'md5'"),
    (lambda f: [*f[:7], "zz"], "checksum is not hex"),
])
def test_malformed_lines_are_errors_naming_the_line(mutate: object, message: str) -> None:
    fields = real_lines()[0].split()
    assert callable(mutate)
    err = error_of("\n".join(real_lines()[1:3]) + "\n" + " ".join(mutate(fields)))
    assert err.line == 3 and message in str(err), str(err)


def test_a_key_given_twice_is_refused() -> None:
    lines = real_lines()
    err = error_of("\n".join([lines[0], lines[2], lines[0]]))
    assert err.line == 3 and "already on line 1" in str(err)


def test_sm2_keys_load_and_need_no_exponent() -> None:
    ca = sm2_test_ca().public_key
    line = format_line(CaKeyEntry(SM2_TEST_CA_RID, SM2_TEST_CA_INDEX, None, "sm2", ca, b"", 0))
    keys = parse_ca_keys(line)
    assert keys[0].key == ca and keys[0].algorithm == "sm2"
    err = error_of(line.replace(" sm2 - ", " sm2 03 "))
    assert "an SM2 key has no exponent" in str(err)
    err = error_of(line.replace(ca.hex(), ca.hex()[:-2]))
    assert "SM2 key is 63 bytes" in str(err)


def test_expired_keys_are_left_out_when_a_day_is_given(tmp_path: Path) -> None:
    import datetime as dt

    keys = load_ca_keys(PROXMARK, today=dt.date(2020, 1, 1))
    assert keys.rsa.find(bytes.fromhex("A000000003"), 0x07) is None  # expired 2017-12-31
    assert keys.rsa.find(bytes.fromhex("A000000003"), 0x08) is not None
    assert keys.rsa.find(bytes.fromhex("A000000003"), 0x92) is not None  # no expiry


def shipped_ca_file(tmp_path: Path) -> Path:
    """The shipped TEST CAs (RSA F1, SM2 F2) written as a CA key file, loaded back unchanged."""
    rsa = testkeys.ca_key().public
    lines = [
        format_line(CaKeyEntry(testkeys.TEST_CA_RID, testkeys.TEST_CA_INDEX, None, "rsa",
                               rsa.modulus, rsa.exponent, 0)),
        format_line(CaKeyEntry(SM2_TEST_CA_RID, SM2_TEST_CA_INDEX, None, "sm2",
                               sm2_test_ca().public_key, b"", 0)),
    ]
    path = tmp_path / "test-ca.txt"
    path.write_text("\n".join(lines) + "\n")
    keys = load_ca_keys(path)
    assert keys.rsa.find(testkeys.TEST_CA_RID, testkeys.TEST_CA_INDEX) == rsa
    return path


def tap_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    main(["tap", "--fresh", "--json", "--date", "2026-11-23", *argv])
    out = capsys.readouterr().out
    result = json.loads(out)
    assert isinstance(result, dict)
    return result


@pytest.mark.parametrize("card", ["sscard3", "sscard3-sm"])
def test_tap_trusts_exactly_the_file(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                     card: str) -> None:
    test_ca = shipped_ca_file(tmp_path)
    assert tap_json(capsys, "--card", card)["outcome"] == "approved-offline"  # default: test CA
    assert tap_json(capsys, "--card", card, "--ca-keys", str(test_ca))["oda_ok"] is True
    real_only = tap_json(capsys, "--card", card, "--ca-keys", str(PROXMARK))
    assert real_only["outcome"] == "declined" and real_only["reason"] == "oda-failed: unknown-ca"


def test_tap_with_a_bad_file_is_a_user_error(capsys: pytest.CaptureFixture[str],
                                             tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("# keys\na0:00:00:00:03 07 171231 rsa 03 a8:9f sha1 00\n")
    assert main(["tap", "--card", "sscard3", "--fresh", "--ca-keys", str(bad)]) == 2
    assert f"{bad}:2: checksum mismatch" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["tap", "--card", "sscard3"], ["terminal", "run"],
    ["backoffice", "replay", "--feed", "city", "--taps", "t.csv", "--cards", "sscard3"], ["sim"],
])
def test_every_kernel_command_takes_the_option(argv: list[str]) -> None:
    from tapsim.cli import build_parser

    args = build_parser().parse_args([*argv, "--ca-keys", str(PROXMARK)])
    assert args.ca_keys == PROXMARK


def test_the_simulation_kernels_read_the_file_named_in_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from sim.latency import terminal_config

    assert terminal_config(b"k" * 32).ca_keys.rsa.find(testkeys.TEST_CA_RID, 0xF1) is not None
    monkeypatch.setenv("TAPSIM_CA_KEYS", str(PROXMARK))
    for epurse in (False, True):
        keys = terminal_config(b"k" * 32, epurse=epurse).ca_keys
        assert len(keys.rsa) == 8 and keys.rsa.find(testkeys.TEST_CA_RID, 0xF1) is None
