"""wire: round trips, strict decoding with named fields, limits, versioning, topics."""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from wire import (
    SIZE_LIMITS,
    Action,
    DenyListDelta,
    DenyListSnapshot,
    FareTableVersion,
    Method,
    Reason,
    Signed,
    TapOutcome,
    TapRecord,
    WireError,
    check_delta,
    check_fare_version,
    check_snapshot,
    decode,
    encode,
    topics,
)

T0 = dt.datetime(2026, 11, 23, 8, 30, tzinfo=dt.timezone(dt.timedelta(hours=8)))
TOKEN = "0123456789abcdef0123456789abcdef"


def tap(**changes: object) -> TapRecord:
    base = TapRecord(
        tap_id="V1:0a1b2c3d:7", validator_id="V1", operator_id="OP1", seq=7, time=T0,
        stop_id="S-12", route_id="R/300", action=Action.TAP, outcome=TapOutcome.ACCEPTED,
        reason=None, method=Method.EMV, pan_token=TOKEN, pan_masked="623190*********0014",
        aid="A000000333010101", amount=200, currency="CNY", rider_category="senior",
        fare_media="unionpay-quickpass", deny_list_version=3, fare_table_version=1,
        oda="fdda-rsa", oda_ok=True, atc=12, cryptogram=bytes(range(8)), cid=0x40,
        iad=bytes.fromhex("0701010360000000"), aip=b"\x20\x00", ac_data=bytes(39),
        scheme="tdes")
    return msgspec.structs.replace(base, **changes)


def raised(payload: bytes, expect: type) -> WireError:
    with pytest.raises(WireError) as info:
        decode(payload, expect)
    return info.value


def test_tap_record_round_trip_is_compact_and_utc() -> None:
    payload = encode(tap())
    back = decode(payload, TapRecord)
    assert back == tap()  # aware times compare by instant
    assert back.time.utcoffset() == dt.timedelta(0)  # UTC on the wire
    # arrays, not maps: no field names travel (259 bytes before the five optional e-purse
    # clearing fields were appended; each costs an EMV record one nil byte: 264)
    assert len(payload) < 270
    assert msgspec.msgpack.decode(payload)[0] == "tap/1"


tokens = st.lists(st.text("0123456789abcdef", min_size=32, max_size=32), max_size=20)
times = st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1),
                     timezones=st.just(dt.UTC))


@given(atc=st.integers(0, 0xFFFF), amount=st.integers(0, 999_999_999_999), when=times,
       seq=st.integers(1, 2**63 - 1), reason=st.none() | st.text(max_size=120),
       balance=st.none() | st.integers(0, 10**6))
def test_tap_records_round_trip(atc: int, amount: int, when: dt.datetime, seq: int,
                                reason: str | None, balance: int | None) -> None:
    record = tap(atc=atc, amount=amount, time=when, seq=seq, reason=reason,
                 epurse_balance_after=balance)
    assert decode(encode(record), TapRecord) == record


@given(version=st.integers(0, 2**63 - 1), toks=tokens, when=times)
def test_downlink_messages_round_trip(version: int, toks: list[str], when: dt.datetime) -> None:
    snap = DenyListSnapshot(version=version, issued_at=when, tokens=toks)
    assert decode(encode(snap), DenyListSnapshot) == snap
    delta = DenyListDelta(from_version=version // 2, to_version=version, issued_at=when,
                          add=toks, remove=[])
    assert decode(encode(delta), DenyListDelta) == delta
    fare = FareTableVersion(version=version, table_id="city-2026", sha256=bytes(32),
                            effective_from=when, issued_at=when)
    assert decode(encode(fare), FareTableVersion) == fare


@given(st.binary(max_size=300))
@example(b"\x91\xa6\x00\x00\x00\x00\x00\x80")  # a kind tag that is not UTF-8
def test_garbage_only_ever_raises_wire_error(blob: bytes) -> None:
    for kind in SIZE_LIMITS:
        try:
            decode(blob, kind)
        except WireError as exc:
            assert exc.reason in (Reason.MALFORMED, Reason.UNKNOWN_KIND, Reason.WRONG_KIND)


def test_schema_errors_name_the_field() -> None:
    raw = msgspec.msgpack.decode(encode(tap()))
    raw[12] = "NOT-A-TOKEN"  # pan_token (index 0 is the kind)
    err = raised(msgspec.msgpack.encode(raw), TapRecord)
    assert err.reason is Reason.MALFORMED
    assert "tap/1.pan_token" in err.detail and "regex" in err.detail
    raw = msgspec.msgpack.decode(encode(tap()))
    raw[10] = 7  # reason must be text or nil
    assert "tap/1.reason" in raised(msgspec.msgpack.encode(raw), TapRecord).detail


def test_clear_pan_cannot_pass_as_mask_or_token() -> None:
    raw = msgspec.msgpack.decode(encode(tap()))
    raw[13] = "6231900000000000014"
    assert "pan_masked" in raised(msgspec.msgpack.encode(raw), TapRecord).detail


def test_out_of_range_values_are_refused() -> None:
    for index, value, field in ((23, 0x10000, "atc"), (4, 0, "seq"), (15, -1, "amount"),
                                (24, b"1234567", "cryptogram"), (8, "walk", "action"),
                                (11, "cash", "method")):
        raw = msgspec.msgpack.decode(encode(tap()))
        raw[index] = value
        err = raised(msgspec.msgpack.encode(raw), TapRecord)
        assert f"tap/1.{field}" in err.detail, (field, err)


def test_naive_time_refused_both_ways() -> None:
    with pytest.raises(WireError) as info:
        encode(tap(time=dt.datetime(2026, 1, 1, 8, 0)))
    assert info.value.reason is Reason.INVALID and "time" in info.value.detail
    raw = msgspec.msgpack.decode(encode(tap()))
    raw[5] = "2026-01-01T08:00:00"
    assert "tap/1.time" in raised(msgspec.msgpack.encode(raw), TapRecord).detail


def test_oversized_payload_refused_before_parsing() -> None:
    err = raised(b"\x00" * (SIZE_LIMITS[TapRecord] + 1), TapRecord)
    assert err.reason is Reason.TOO_LARGE and "4097 bytes" in err.detail


def test_list_length_limits_hold() -> None:
    delta = DenyListDelta(from_version=1, to_version=2, issued_at=T0, add=[TOKEN] * 100_001,
                          remove=[])
    err = raised(encode(delta), DenyListDelta)
    assert err.reason is Reason.MALFORMED and "dld/1.add" in err.detail


def test_kinds_are_told_apart() -> None:
    snap = DenyListSnapshot(version=1, issued_at=T0, tokens=[])
    err = raised(encode(snap), TapRecord)
    assert err.reason is Reason.WRONG_KIND and err.kind == "dls/1"
    err = raised(msgspec.msgpack.encode(["tap/2", 1, 2]), TapRecord)
    assert err.reason is Reason.UNKNOWN_KIND and "'tap/2'" in err.detail
    assert raised(msgspec.msgpack.encode({"tap_id": "x"}), TapRecord).reason is Reason.MALFORMED


def test_newer_minor_version_with_trailing_field_still_decodes() -> None:
    raw = msgspec.msgpack.decode(encode(tap()))
    raw.append("a field from v1.1")
    assert decode(msgspec.msgpack.encode(raw), TapRecord) == tap()


def test_older_minor_version_without_optional_tail_decodes_with_defaults() -> None:
    declined = tap(outcome=TapOutcome.DECLINED, reason="card-expired")
    raw = msgspec.msgpack.decode(encode(declined))[:21]  # up to fare_table_version
    back = decode(msgspec.msgpack.encode(raw), TapRecord)
    assert back.oda == "none" and back.cryptogram is None and back.tac is None


def test_an_accepted_tap_carries_its_method_s_proof() -> None:
    raw = msgspec.msgpack.decode(encode(tap()))
    raw[24] = None  # an accepted EMV tap without its cryptogram
    err = raised(msgspec.msgpack.encode(raw), TapRecord)
    assert err.reason is Reason.MALFORMED
    assert err.detail == "tap/1: an accepted emv tap needs cryptogram"
    purse = tap(method=Method.EPURSE, aid="A000000632010105", fare_media="tunion-epurse",
                oda="none", oda_ok=None, atc=None, cryptogram=None, cid=None, iad=None, aip=None,
                ac_data=None, scheme=None, epurse_balance_before=3000, epurse_balance_after=2800,
                epurse_serial=4, tac=bytes.fromhex("923D9EB2"), psam_id="310000000001",
                psam_serial=17)
    assert decode(encode(purse), TapRecord) == purse
    raw = msgspec.msgpack.decode(encode(purse))
    del raw[33:]  # no TAC, no PSAM
    assert "needs tac, psam_id, psam_serial" in raised(msgspec.msgpack.encode(raw),
                                                       TapRecord).detail


def test_signed_envelope_signature_length_is_exact() -> None:
    bad = msgspec.msgpack.encode(["sig/1", "k1", b"body", b"short"])
    assert "sig/1.signature" in raised(bad, Signed).detail


# -- version rules -----------------------------------------------------------------------

def snap(version: int) -> DenyListSnapshot:
    return DenyListSnapshot(version=version, issued_at=T0, tokens=[])


def delta(a: int, b: int, add: list[str] | None = None,
          remove: list[str] | None = None) -> DenyListDelta:
    return DenyListDelta(from_version=a, to_version=b, issued_at=T0, add=add or [],
                         remove=remove or [])


def reason_of(fn: object, *args: object) -> Reason | None:
    try:
        fn(*args)  # type: ignore[operator]
    except WireError as exc:
        return exc.reason
    return None


def test_snapshot_must_be_newer() -> None:
    assert reason_of(check_snapshot, 4, snap(5)) is None
    assert reason_of(check_snapshot, 5, snap(5)) is Reason.STALE
    assert reason_of(check_snapshot, 6, snap(5)) is Reason.STALE


def test_delta_rules() -> None:
    assert reason_of(check_delta, 5, delta(5, 6)) is None
    assert reason_of(check_delta, 5, delta(5, 9)) is None  # a delta may span versions
    assert reason_of(check_delta, 6, delta(5, 6)) is Reason.STALE
    assert reason_of(check_delta, 5, delta(6, 7)) is Reason.GAP
    assert reason_of(check_delta, 5, delta(5, 5)) is Reason.INVALID
    assert reason_of(check_delta, 5, delta(5, 6, [TOKEN], [TOKEN])) is Reason.INVALID


def test_fare_version_must_be_newer() -> None:
    msg = FareTableVersion(version=3, table_id="t", sha256=bytes(32), effective_from=T0,
                           issued_at=T0)
    assert reason_of(check_fare_version, 2, msg) is None
    assert reason_of(check_fare_version, 3, msg) is Reason.STALE


# -- topics ------------------------------------------------------------------------------

def test_topic_layout() -> None:
    assert topics.tap_topic("V1") == "tapsim/v1/taps/V1"
    assert topics.validator_of("tapsim/v1/taps/BUS-12.front") == "BUS-12.front"
    assert topics.downlink_type(topics.DENY_DELTA) is DenyListDelta


@pytest.mark.parametrize("bad", ["", "a/b", "+", "#", "v 1", "x" * 33, "-lead"])
def test_validator_ids_that_cannot_be_a_topic_level(bad: str) -> None:
    with pytest.raises(WireError) as info:
        topics.tap_topic(bad)
    assert info.value.reason is Reason.INVALID


@pytest.mark.parametrize("topic", ["tapsim/v1/taps/", "tapsim/v1/taps/a/b", "other/V1",
                                   "tapsim/v2/taps/V1"])
def test_wrong_tap_topics(topic: str) -> None:
    with pytest.raises(WireError) as info:
        topics.validator_of(topic)
    assert info.value.reason is Reason.WRONG_TOPIC


def test_wrong_downlink_topic() -> None:
    with pytest.raises(WireError) as info:
        topics.downlink_type("tapsim/v1/denylist/everything")
    assert info.value.reason is Reason.WRONG_TOPIC
