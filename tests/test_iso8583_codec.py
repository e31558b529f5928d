"""The dialect file, the codec, field 55 and the framing (isolink/), without a host."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import iso8583
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emv.appdata import IssuerApplicationData
from emv.card.image import personalise
from emv.card.profile import load_profile
from isolink.dialect import (
    DEFAULT_SPEC,
    MessageFormatError,
    SpecError,
    dialect_from_dict,
    load_dialect,
)
from isolink.framing import (
    EmptyFrameError,
    FrameReader,
    OversizedFrameError,
    TruncatedFrameError,
    frame,
)
from isolink.messages import (
    icc_data,
    original_data,
    read_icc,
    read_original,
    request_id,
    transmission_time,
)
from isolink.taps import CardTapper

D = load_dialect()
TOKEN = "0123456789abcdef0123456789abcdef"

# One value per field of the dialect, each of its format and length.
SAMPLE: dict[str, str] = {
    "3": "000000", "4": "000000000150", "7": "1207083015", "11": "000042", "25": "51",
    "32": "10000000001", "37": "000000000042", "38": "A1B2C3", "39": "00", "41": "VAL00001",
    "42": "tapsim-transit ", "48": TOKEN, "49": "156",
    "55": "9F2608" + "11" * 8 + "9F360200" + "07", "70": "301",
    "90": "0100" + "000041" + "1207083014" + "10000000001" + "0" * 11,
}  # fmt: skip


def sample(mti: str, keys: tuple[str, ...]) -> dict[str, Any]:
    return {"t": mti, **{k: SAMPLE[k] for k in keys}}


def every_message() -> list[tuple[str, tuple[str, ...]]]:
    """Each request of the dialect file with its required fields, and each answer with its
    echoed fields and a response code."""
    out = []
    for mti, rule in D.messages.items():
        out.append((mti, rule.required))
        out.append((rule.answer, (*rule.echo, "39")))
    return out


@pytest.mark.parametrize(("mti", "keys"), every_message(), ids=lambda v: str(v)[:12])
def test_every_message_round_trips(mti: str, keys: tuple[str, ...]) -> None:
    fields = sample(mti, keys)
    raw = D.encode(fields)
    back = D.decode(raw)
    assert back == fields
    assert D.encode(back) == raw


@pytest.mark.parametrize(("mti", "keys"), every_message(), ids=lambda v: str(v)[:12])
def test_codec_bytes_equal_pyiso8583_on_the_spec_file_alone(mti: str, keys: tuple[str, ...]
                                                            ) -> None:
    # Independent of isolink's loader: the "fields" object of the JSON file handed straight
    # to pyiso8583 must give the same bytes as the dialect's encoder.
    spec = json.loads(DEFAULT_SPEC.read_text())["fields"]
    fields = sample(mti, keys)
    raw, _ = iso8583.encode(dict(fields), spec)
    assert D.encode(fields) == bytes(raw)


def test_bitmap_bytes_follow_iso8583_numbering() -> None:
    # ISO 8583-1:1987 4.3: bit 1 of the primary bitmap announces the secondary bitmap; field
    # n is bit n, counted from the most significant bit of the first byte.  An 0800 echo
    # with fields 7, 11 and 70: primary 82 20 00.. (bits 1, 7, 11), secondary 04 00..
    # (bit 70 = the 6th of the secondary), then the fields in number order.
    raw = D.encode({"t": "0800", "7": "1207083015", "11": "000042", "70": "301"})
    expected = (b"0800" + bytes.fromhex("8220000000000000") + bytes.fromhex("0400000000000000")
                + b"1207083015" + b"000042" + b"301")
    assert raw == expected


def test_icc_data_carries_what_the_card_maced() -> None:
    profile = load_profile("sscard3")
    tapper = CardTapper(profile)
    values = tapper.tap(amount=0, currency="156", country="156", day=date(2026, 12, 7),
                        unpredictable=b"\x01\x02\x03\x04")
    icc = read_icc(icc_data(values))
    assert icc.atc == 1 == tapper.atc
    assert icc.arqc == values[0x9F26]
    # The issuer's recomputation: the card's own key and scheme over the rebuilt AC input.
    app = personalise(profile).apps[tapper.aid]
    key = app.scheme.derive_session_key(app.card_key, icc.atc)
    assert icc.ac_data is not None
    assert app.scheme.generate_ac(key, icc.ac_data) == icc.arqc
    assert icc.ac_data.endswith(IssuerApplicationData.parse(values[0x9F10]).cvr)


def test_icc_data_errors_are_field_55_format_errors() -> None:
    with pytest.raises(MessageFormatError) as bad_tlv:
        read_icc("9F2608AABB")  # length 8, two bytes of value
    assert bad_tlv.value.field == "55"
    assert read_icc(None).arqc is None
    assert read_icc("9F360200 07".replace(" ", "")).ac_data is None  # no IAD/AIP: issuer says 12


def test_original_data_elements_name_the_request_key() -> None:
    key = ("00010000001", transmission_time(datetime(2026, 12, 7, 8, 30, 15, tzinfo=UTC)),
           "000041")
    value = original_data("0100", key)
    assert len(value) == 42
    assert read_original(value) == ("0100", key)
    assert request_id(key) == "iso:00010000001:1207083015:000041"


def test_decode_errors_keep_mti_and_stan() -> None:
    good = D.encode(sample("0100", D.messages["0100"].required))
    # A character out of its class is found once the message is parsed: the STAN is known,
    # so a host can answer "30".
    bad_amount = good.replace(b"000000000150", b"0000000001X0")
    with pytest.raises(MessageFormatError) as exc:
        D.decode(bad_amount)
    assert (exc.value.field, exc.value.mti, exc.value.stan) == ("4", "0100", "000042")
    # A message cut inside field 4 fails before field 11 is read: no STAN, nothing to answer.
    cut = good[: good.index(b"000000000150") + 5]
    with pytest.raises(MessageFormatError) as exc2:
        D.decode(cut)
    assert (exc2.value.field, exc2.value.mti, exc2.value.stan) == ("4", "0100", None)


def test_a_bitmap_naming_a_field_outside_the_dialect_is_a_format_error() -> None:
    raw = bytearray(D.encode(sample("0800", ("7", "11", "70"))))
    raw[4 + 7] |= 0x01  # primary bit 64 (MAC), absent from the dialect, no data for it
    with pytest.raises(MessageFormatError) as exc:
        D.decode(bytes(raw))
    assert exc.value.stan == "000042"


def test_missing_required_field() -> None:
    fields = sample("0100", D.messages["0100"].required)
    del fields["48"]
    with pytest.raises(MessageFormatError, match="field 48: required by 0100"):
        D.check_required(D.decode(D.encode(fields)))


def test_encode_refuses_what_the_dialect_does_not_allow() -> None:
    with pytest.raises(MessageFormatError, match="field 2: not in the dialect"):
        D.encode({"t": "0100", "2": "6212345678901234", "11": "000001"})
    with pytest.raises(MessageFormatError, match="field 48"):
        D.encode({"t": "0100", "11": "000001", "48": "NOT-HEX"})


def test_spec_file_errors_name_file_and_entry(tmp_path: Path) -> None:
    raw = json.loads(DEFAULT_SPEC.read_text())
    del raw["fields"]["7"]["max_len"]
    with pytest.raises(SpecError, match=r"x\.json: fields\.7: missing max_len"):
        dialect_from_dict(raw, "x.json")
    raw = json.loads(DEFAULT_SPEC.read_text())
    raw["messages"]["0100"]["required"].append("2")
    with pytest.raises(SpecError, match=r"messages\.0100: field 2 is not in fields"):
        dialect_from_dict(raw)
    broken = tmp_path / "d.json"
    broken.write_text("{")
    with pytest.raises(SpecError, match=r"d\.json: not JSON"):
        load_dialect(broken)
    with pytest.raises(SpecError, match="cannot read"):
        load_dialect(tmp_path / "none.json")


# -- framing ----------------------------------------------------------------------------------


def test_frames_arrive_in_any_pieces() -> None:
    stream = frame(b"abc") + frame(b"de" * 200) + frame(b"f")
    for size in (1, 2, 3, 7, len(stream)):
        reader = FrameReader(4096)
        got: list[bytes] = []
        for i in range(0, len(stream), size):
            got += reader.receive_data(stream[i:i + size])
        assert got == [b"abc", b"de" * 200, b"f"]
        assert reader.pending == 0
        reader.close()


def test_oversized_and_empty_frames_fail_at_their_offset() -> None:
    reader = FrameReader(100)
    with pytest.raises(OversizedFrameError) as exc:
        reader.receive_data(frame(b"ok") + (101).to_bytes(2, "big"))
    assert (exc.value.size, exc.value.limit, exc.value.offset) == (101, 100, 4)
    with pytest.raises(OversizedFrameError):
        reader.receive_data(b"more")  # the stream lost its framing: refused from now on
    with pytest.raises(EmptyFrameError):
        FrameReader().receive_data(b"\x00\x00")
    with pytest.raises(OversizedFrameError):
        frame(b"x" * 101, 100)


def test_a_stream_ending_inside_a_frame_is_truncated() -> None:
    reader = FrameReader()
    assert reader.receive_data(frame(b"hello")[:4]) == []
    with pytest.raises(TruncatedFrameError, match="after 4 of 7 bytes"):
        reader.close()
    one = FrameReader()
    one.receive_data(b"\x00")
    with pytest.raises(TruncatedFrameError):
        one.close()


# -- properties -------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=300), max_size=20), st.integers(1, 64))
def test_framing_survives_any_split(messages: list[bytes], chunk: int) -> None:
    stream = b"".join(frame(m) for m in messages)
    reader = FrameReader(300)
    got: list[bytes] = []
    for i in range(0, len(stream), chunk):
        got += reader.receive_data(stream[i:i + chunk])
    assert got == messages
    reader.close()


_GOOD = D.encode(sample("0100", D.messages["0100"].required))


@settings(max_examples=500, deadline=None)
@given(st.one_of(
    st.binary(max_size=300),
    # a valid message with a few bytes changed, cut or added: the bitmap, lengths, digits
    st.tuples(st.integers(0, len(_GOOD) - 1), st.binary(min_size=1, max_size=4),
              st.integers(0, 8)).map(
        lambda t: _GOOD[:t[0]] + t[1] + _GOOD[t[0] + len(t[1]) + t[2]:]),
))
def test_decoding_anything_fails_only_with_a_format_error(data: bytes) -> None:
    # The host answers "30" or drops on MessageFormatError; anything else would be a bug
    # (it is caught and logged there too, but the codec should never need that).
    try:
        fields = D.decode(data)
        D.check_required(fields)
    except MessageFormatError:
        return
    assert D.decode(D.encode(fields)) == fields  # what was accepted is a message of the dialect
