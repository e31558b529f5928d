import pytest
from hypothesis import given
from hypothesis import strategies as st

from emv.apdu import SW, ApduError, CommandApdu, ResponseApdu, get_processing_options, select
from emv.dol import DolEntry, build_dol, fit, parse_dol, split_dol_data
from emv.tlv import TlvError

# A qPBOC PDOL: TTQ, amount, amount other, country, TVR, currency, date, type, UN, SM indicator.
PDOL = bytes.fromhex("9F66049F02069F03069F1A0295055F2A029A039C019F3704DF6901")


def test_parse_pdol() -> None:
    dol = parse_dol(PDOL)
    assert dol[0] == DolEntry(0x9F66, 4)
    assert [e.tag for e in dol][-2:] == [0x9F37, 0xDF69]
    assert sum(e.length for e in dol) == 34


def test_build_pads_numeric_left_and_binary_right() -> None:
    dol = parse_dol(PDOL)
    data = build_dol(dol, {0x9F02: bytes.fromhex("0200"), 0x9F66: bytes.fromhex("2600")})
    values = split_dol_data(dol, data)
    assert values[0x9F02] == bytes.fromhex("000000000200")
    assert values[0x9F66] == bytes.fromhex("26000000")
    assert values[0x9F37] == bytes(4)  # unknown to the terminal: zeros


def test_fit_truncates_by_format() -> None:
    assert fit(0x9F02, bytes.fromhex("00000000001234"), 6) == bytes.fromhex("000000001234")
    assert fit(0x84, b"ABCDEF", 4) == b"ABCD"
    assert fit(0x5A, bytes.fromhex("1234"), 4) == bytes.fromhex("1234FFFF")


def test_bad_dol() -> None:
    with pytest.raises(TlvError, match="offset 0, tag 9F66: DOL entry has no length"):
        parse_dol(bytes.fromhex("9F66"))
    with pytest.raises(TlvError, match="one byte below 128"):
        parse_dol(bytes.fromhex("9F6681"))
    with pytest.raises(TlvError, match="asks for 34"):
        split_dol_data(parse_dol(PDOL), b"\x00")


def test_command_apdu_cases() -> None:
    sel = select(b"2PAY.SYS.DDF01")
    assert sel.to_bytes().hex().upper() == "00A404000E325041592E5359532E444446303100"
    assert CommandApdu.parse(sel.to_bytes()) == sel
    gpo = get_processing_options(b"\x01\x02")
    assert gpo.to_bytes().hex().upper() == "80A80000048302010200"
    get_atc = CommandApdu(0x80, 0xCA, 0x9F, 0x36, le=0)
    assert CommandApdu.parse(bytes.fromhex("80CA9F3600")) == get_atc
    assert CommandApdu.parse(bytes.fromhex("00B2010C")).le is None


@pytest.mark.parametrize("raw", ["00A4", "00A4040005AABB", "00A40400000000"])
def test_bad_command_apdu(raw: str) -> None:
    with pytest.raises(ApduError):
        CommandApdu.parse(bytes.fromhex(raw))


def test_response_and_status_words() -> None:
    r = ResponseApdu.parse(bytes.fromhex("6F009000"))
    assert r.ok and r.data == b"\x6f\x00"
    assert SW.describe(0x6A82) == "FILE_NOT_FOUND"
    assert SW.describe(0x6110) == "MORE_DATA(16)"
    assert SW.describe(0x63C2) == "VERIFY_FAILED(2 tries left)"
    with pytest.raises(ApduError):
        ResponseApdu.parse(b"\x90")


@given(st.binary(max_size=300))
def test_command_parse_never_crashes(raw: bytes) -> None:
    try:
        apdu = CommandApdu.parse(raw)
    except ApduError:
        return
    assert apdu.to_bytes() == raw or apdu.le is not None or len(raw) == 5
