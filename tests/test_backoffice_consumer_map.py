"""The consumer's gate and downlink book, without a broker: wire record -> core record,
refusals with their reasons, dead letters without card numbers, deny-list versions."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from pathlib import Path
from zoneinfo import ZoneInfo

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from backoffice.consumer.downlink import (
    DownlinkBook,
    fare_version,
    feed_digest,
    net_delta,
    table_id,
)
from backoffice.consumer.gate import (
    DEAD_LETTER_PAYLOAD_MAX,
    EpurseTap,
    FareMediaLabels,
    Refused,
    Skipped,
    dead_letter,
    epurse_row,
    read_dead_letter,
    read_tap,
    scrub_text,
)
from backoffice.records import DenyEventRow
from backoffice.storage import open_store, sqlite_url
from backoffice.taps import Action, TapRecord
from fare.samples import sample_feed_path
from tests.fixtures.terminal import rig
from wire import (
    DenyListDelta,
    DenyListSnapshot,
    FareTableVersion,
    Method,
    Reason,
    Signer,
    TapOutcome,
    Verifier,
    encode,
    generate_signing_key,
)
from wire import TapRecord as WireTap
from wire.versioning import check_delta, check_snapshot

SHANGHAI = ZoneInfo("Asia/Shanghai")
CITY_MEDIA = FareMediaLabels({"cash": 0, "tunion": 2, "cemv": 3})
TOPIC = "tapsim/v1/taps/V1"


@pytest.fixture(scope="module")
def taps(tmp_path_factory: pytest.TempPathFactory) -> list[WireTap]:
    """Real records from the validator: QuickPass accepted, e-purse accepted, deny-listed."""
    path = tmp_path_factory.mktemp("v")
    qp = rig(path / "qp.db", validator_id="V1", stop_id="S01", route_id="1",
             card_name="unionpay-debit")
    ep = rig(path / "ep.db", validator_id="V1", epurse=True)
    out = [qp.validator.tap(qp.reader).record, ep.validator.tap(ep.reader).record]
    qp.validator.deny_list.update(1, [out[0].pan_token], [])  # type: ignore[union-attr]
    out.append(qp.validator.tap(qp.reader).record)
    assert all(t is not None for t in out)
    return out  # type: ignore[return-value]


def test_an_accepted_quickpass_tap_becomes_the_cores_record(taps: list[WireTap]) -> None:
    wire = taps[0]
    core = read_tap(TOPIC, encode(wire), CITY_MEDIA, SHANGHAI)
    assert isinstance(core, TapRecord)
    assert (core.tap_id, core.validator_id, core.stop_id, core.route_id) == \
        (wire.tap_id, "V1", "S01", "1")
    assert core.masked_pan == wire.pan_masked and core.pan_token == wire.pan_token
    assert core.arqc == wire.cryptogram and core.ac_data == wire.ac_data
    assert core.atc == wire.atc and core.scheme == wire.scheme == "tdes"
    assert core.action is Action.TAP and core.time == wire.time
    assert core.time.utcoffset() == dt.timedelta(hours=8)  # shown in the feed's zone
    assert wire.fare_media == "unionpay-quickpass" and core.fare_media == "cemv"


def test_taps_the_core_does_not_charge_are_skipped_or_kept_for_clearing(
        taps: list[WireTap]) -> None:
    epurse = read_tap(TOPIC, encode(taps[1]), CITY_MEDIA, SHANGHAI)
    assert isinstance(epurse, EpurseTap) and epurse.tap_id == taps[1].tap_id
    row = epurse_row(epurse.record, 0)
    assert (row.issuer_id, row.card_serial, row.psam_id) == ("0000", 0, "310000000001")
    assert row.amount == row.balance_before - row.balance_after == taps[1].amount
    assert taps[2].outcome is TapOutcome.DENY_LISTED
    assert read_tap(TOPIC, encode(taps[2]), CITY_MEDIA, SHANGHAI) == \
        Skipped("deny_listed", taps[2].tap_id)


def test_fare_media_labels() -> None:
    assert CITY_MEDIA("cemv", Method.EMV) == "cemv"  # the feed's own label stays
    assert CITY_MEDIA("unionpay-quickpass", Method.EMV) == "cemv"
    assert CITY_MEDIA("tunion-epurse", Method.EPURSE) == "tunion"
    two = FareMediaLabels({"cemv": 3, "mobile-emv": 3})  # ambiguous: not given
    assert two("unionpay-quickpass", Method.EMV) == ""


@pytest.mark.parametrize(("topic", "payload", "reason", "where"), [
    (TOPIC, b"\xc1garbage", "malformed", "not MessagePack"),
    (TOPIC, b"x" * 5000, "too-large", "5000 bytes, limit 4096"),
    (TOPIC, msgspec.msgpack.encode(["tap/9", "x"]), "unknown-kind", "tap/9"),
    (TOPIC, msgspec.msgpack.encode(["tap/1", "V1:1:1"]), "malformed", "at least length 21"),
    # A str that is not UTF-8: msgspec's words for it changed in 0.23; only tapsim's are checked.
    (TOPIC, b"\x91\xa6\x00\x00\x00\x00\x00\x80", "malformed", "not MessagePack"),
    ("tapsim/v1/taps/bad id", b"", "wrong-topic", "not a validator id"),
    ("tapsim/v1/elsewhere/V1", b"", "wrong-topic", "is not under"),
])
def test_refusals_name_the_reason(topic: str, payload: bytes, reason: str, where: str) -> None:
    out = read_tap(topic, payload, CITY_MEDIA, SHANGHAI)
    assert isinstance(out, Refused) and out.reason == reason and where in out.detail, out


def test_a_field_error_names_the_field(taps: list[WireTap]) -> None:
    raw = msgspec.msgpack.decode(encode(taps[0]))
    raw[12] = "6231900000000000014"  # a clear PAN where the token goes
    out = read_tap(TOPIC, msgspec.msgpack.encode(raw), CITY_MEDIA, SHANGHAI)
    assert isinstance(out, Refused) and out.reason == "malformed"
    assert out.detail.startswith("tap/1.pan_token:") and "6231900000000000014" not in out.detail


def test_another_validators_record_on_this_topic_is_refused(taps: list[WireTap]) -> None:
    out = read_tap("tapsim/v1/taps/V2", encode(taps[0]), CITY_MEDIA, SHANGHAI)
    assert out == Refused(Reason.WRONG_TOPIC.value,
                          "a record of validator 'V1' on 'tapsim/v1/taps/V2'", taps[0].tap_id)


def test_dead_letter_carries_reason_and_payload_with_card_numbers_masked() -> None:
    payload = b'{"pan": "6231900000000000014", "x": 1}'
    now = dt.datetime(2026, 3, 2, 8, tzinfo=SHANGHAI)
    msg = dead_letter("tapsim/v1/taps/V1", payload, Refused("malformed", "not MessagePack"), now)
    assert b"6231900000000000014" not in msg
    letter = read_dead_letter(msg)
    assert (letter.reason, letter.detail, letter.topic, letter.size) == \
        ("malformed", "not MessagePack", "tapsim/v1/taps/V1", len(payload))
    assert letter.received_at == now and letter.received_at.utcoffset() == dt.timedelta(0)
    assert base64.b64decode(letter.payload_b64 or "") == b'{"pan": "623190*********0014", "x": 1}'
    large = b"7" * (DEAD_LETTER_PAYLOAD_MAX + 1)
    big = dead_letter(TOPIC, large, Refused("too-large", "x"), now)
    assert read_dead_letter(big).payload_b64 is None  # too big to carry: hash and size only
    assert json.loads(big)["sha256"] == hashlib.sha256(large).hexdigest()


@given(st.binary(max_size=200))
def test_whatever_arrives_is_a_record_a_skip_or_a_refusal(payload: bytes) -> None:
    """The writer must never fail on a payload (it would stay unacknowledged for ever)."""
    out = read_tap(TOPIC, payload, CITY_MEDIA, SHANGHAI)
    assert isinstance(out, Refused | Skipped | TapRecord)


@given(st.binary(max_size=300))
def test_no_digit_run_of_card_length_survives_a_dead_letter(payload: bytes) -> None:
    msg = dead_letter(TOPIC, payload + b"6222020000000000026", Refused("malformed", "x"),
                      dt.datetime(2026, 3, 2, tzinfo=dt.UTC))
    body = base64.b64decode(read_dead_letter(msg).payload_b64 or "")
    assert b"6222020000000000026" not in body
    assert scrub_text("pan 6222020000000000026 seen") == "pan 622202*********0026 seen"


# -- the downlink book ----------------------------------------------------------------------

def ev(token: str, op: str) -> DenyEventRow:
    return DenyEventRow(token, "622202*********0026", op, "test", 0)


def test_net_delta_keeps_each_tokens_last_change() -> None:
    a, b, c = "a" * 32, "b" * 32, "c" * 32
    events = [(1, ev(a, "add")), (2, ev(b, "add")), (3, ev(a, "remove")), (4, ev(c, "remove")),
              (5, ev(c, "add"))]
    assert net_delta(events) == ([b, c], [a])


@given(st.lists(st.tuples(st.sampled_from("abcd"), st.sampled_from(["add", "remove"]))))
def test_a_netted_delta_always_applies_to_the_list_it_came_from(ops: list[tuple[str, str]]) -> None:
    events = [(i + 1, ev(t * 32, op)) for i, (t, op) in enumerate(ops)]
    start = {"a" * 32, "c" * 32}
    listed = set(start)
    for _, e in events:
        (listed.add if e.op == "add" else listed.discard)(e.pan_token)
    add, remove = net_delta(events)
    assert not set(add) & set(remove)
    assert (start - set(remove)) | set(add) == listed


def test_book_versions_follow_the_cores_deny_events(tmp_path: Path) -> None:
    store = open_store(sqlite_url(tmp_path / 'bo.db'))
    key = generate_signing_key()
    verifier = Verifier(key.public_key())
    clock = lambda: dt.datetime(2026, 3, 2, tzinfo=dt.UTC)  # noqa: E731
    book = DownlinkBook(store, Signer(key), clock)
    version, snap = book.snapshot()
    assert version == 0 and verifier.open(snap, DenyListSnapshot).tokens == []
    assert book.changes() is None
    store._execute("INSERT INTO deny_list VALUES (?, ?, ?, ?)", ("a" * 32, "m", "r", 1))
    store._executemany("INSERT INTO deny_events (pan_token, masked_pan, op, reason, at_us) "
                       "VALUES (?, ?, ?, ?, ?)", [("a" * 32, "m", "add", "r", 1),
                                                  ("b" * 32, "m", "add", "r", 1),
                                                  ("b" * 32, "m", "remove", "r", 2)])
    delta = book.changes()
    assert delta is not None and (delta.from_version, delta.to_version) == (0, 3)
    opened = verifier.open(delta.payload, DenyListDelta)
    assert (opened.add, opened.remove) == (["a" * 32], ["b" * 32])
    check_delta(0, opened)  # a validator at 0 takes it
    version, snap = book.snapshot()
    check_snapshot(0, verifier.open(snap, DenyListSnapshot))
    assert version == 3 and verifier.open(snap, DenyListSnapshot).tokens == ["a" * 32]
    # A restart picks the version up again from the database, never going back.
    assert DownlinkBook(store, Signer(key), clock).version == 3
    store.close()


def test_fare_version_moves_only_when_the_feed_changes(tmp_path: Path) -> None:
    store = open_store(sqlite_url(tmp_path / 'bo.db'))
    t1 = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
    city = feed_digest(sample_feed_path("city"))
    first = fare_version(store, "city", city, t1)
    again = fare_version(store, "city", city, t1 + dt.timedelta(days=1))
    assert (first.version, again.version) == (1, 1) and again.effective_from == t1
    other = fare_version(store, "harbour", feed_digest(sample_feed_path("harbour")),
                         t1 + dt.timedelta(days=2))
    assert other.version == 2 and other.effective_from == t1 + dt.timedelta(days=2)
    assert isinstance(other, FareTableVersion) and len(other.sha256) == 32
    assert table_id("澜山 city feed!") == "city-feed" and table_id("!!") == "fare-table"
    store.close()

