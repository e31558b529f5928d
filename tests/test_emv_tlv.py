import pytest
from hypothesis import given
from hypothesis import strategies as st

from emv import tlv
from emv.tags import tag_name
from emv.tlv import Tlv, TlvError, decode, encode


def _ppse_answer() -> bytes:
    apps = [
        tlv.encode_one(0x61, tlv.encode_one(0x4F, bytes.fromhex("A000000333010101"))
                       + tlv.encode_one(0x87, b"\x01")),
        tlv.encode_one(0x61, tlv.encode_one(0x4F, bytes.fromhex("A000000632010105"))
                       + tlv.encode_one(0x87, b"\x02")),
    ]
    bf0c = tlv.encode_one(0xBF0C, b"".join(apps))
    fci = tlv.encode_one(0x84, b"2PAY.SYS.DDF01") + tlv.encode_one(0xA5, bf0c)
    return tlv.encode_one(0x6F, fci)


def test_ppse_keeps_duplicate_templates_in_order() -> None:
    nodes = decode(_ppse_answer())
    apps = nodes[0].find_all(0x61)
    assert [a.find(0x4F).value.hex().upper() for a in apps if a.find(0x4F)] == [
        "A000000333010101",
        "A000000632010105",
    ]
    assert nodes[0].find(0x84) == Tlv(0x84, b"2PAY.SYS.DDF01")


def test_multibyte_tags_and_long_lengths() -> None:
    value = bytes(range(256)) * 2
    blob = bytes.fromhex("9F4B820200") + value + bytes.fromhex("5F2A020156")
    nodes = decode(blob)
    assert [n.tag for n in nodes] == [0x9F4B, 0x5F2A]
    assert nodes[0].value == value
    assert encode(nodes) == blob


def test_padding_zero_bytes_are_skipped() -> None:
    assert decode(bytes.fromhex("00009F360200010000")) == [Tlv(0x9F36, b"\x00\x01")]


@pytest.mark.parametrize(
    ("blob", "offset", "tag", "words"),
    [
        ("9F", 0, 0x9F, "tag runs past"),
        ("9F36", 0, 0x9F36, "length missing"),
        ("9F360500", 0, 0x9F36, "runs past the end"),
        ("5A8201", 1, 0x5A, "length field runs past"),
        ("5A80", 1, 0x5A, "indefinite"),
        ("9F3602000170035A0501", 7, 0x5A, "runs past the end"),
        ("5A85000000000000", 1, 0x5A, "not supported"),
        ("DFFFFFFF0100", 0, None, "longer than 4 bytes"),
    ],
)
def test_malformed_input_names_offset_and_tag(
    blob: str, offset: int, tag: int | None, words: str
) -> None:
    with pytest.raises(TlvError) as info:
        decode(bytes.fromhex(blob))
    assert info.value.offset == offset
    if tag is not None:
        assert info.value.tag == tag
        assert tlv.tag_hex(tag) in str(info.value)
    assert words in str(info.value)
    assert f"offset {offset}" in str(info.value)


def test_flatten_first_occurrence_wins() -> None:
    nodes = decode(bytes.fromhex("7008 5A0212349F360101 9F360102".replace(" ", "")))
    assert tlv.flatten(nodes) == {0x5A: b"\x12\x34", 0x9F36: b"\x01"}


def test_qpboc_tag_meanings() -> None:
    assert "Offline Spending" in tag_name(0x9F5D)
    assert "SM Algorithm" in tag_name(0xDF69)
    assert "Terminal Transaction Qualifiers" in tag_name(0x9F66)
    assert "Card Transaction Qualifiers" in tag_name(0x9F6C)
    assert tag_name(0x9F7F) == "unknown"


# --- properties --------------------------------------------------------------

def _tags(constructed: bool) -> st.SearchStrategy[int]:
    bit = 0x20 if constructed else 0x00
    one = st.integers(0x01, 0x1E).map(lambda t: 0x40 | bit | t)
    two = st.integers(0x01, 0x7F).map(lambda t: ((0x9F & ~0x20) | bit) << 8 | t)
    three = st.tuples(st.integers(0x81, 0xFF), st.integers(0x01, 0x7F)).map(
        lambda p: (((0xDF & ~0x20) | bit) << 16) | (p[0] << 8) | p[1]
    )
    return st.one_of(one, two, three)


primitive = st.tuples(_tags(False), st.binary(max_size=300)).map(lambda p: Tlv(p[0], p[1]))
trees = st.recursive(
    primitive,
    lambda kids: st.tuples(_tags(True), st.lists(kids, max_size=4)).map(
        lambda p: Tlv(p[0], encode(p[1]), tuple(p[1]))
    ),
    max_leaves=12,
)


@given(st.lists(trees, max_size=5))
def test_round_trip(nodes: list[Tlv]) -> None:
    blob = encode(nodes)
    assert decode(blob) == nodes
    assert encode(decode(blob)) == blob


@given(st.binary(max_size=200))
def test_garbage_raises_only_tlv_error(blob: bytes) -> None:
    try:
        nodes = decode(blob)
    except TlvError as exc:
        assert 0 <= exc.offset <= len(blob)
    else:
        assert isinstance(nodes, list)
