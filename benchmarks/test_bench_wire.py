"""wire: encode/decode of a tap record, and opening a signed deny-list snapshot.

Targets (issue 6, "compact and fast to encode"): a tap record under 300 bytes, encode and
decode each at a median under 20 us; a signed 100 000-token snapshot opened (size check,
signature, strict decode) in under 250 ms, so even a big list never stalls a validator for
long.  Report: sizes and throughputs in extra_info.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from benchmarks.conftest import median_seconds
from wire import (
    Action,
    DenyListSnapshot,
    Method,
    Signer,
    TapOutcome,
    TapRecord,
    Verifier,
    decode,
    encode,
    generate_signing_key,
)

RECORD = TapRecord(
    tap_id="BUS-0042:0a1b2c3d:123456", validator_id="BUS-0042", operator_id="OP1", seq=123456,
    time=dt.datetime(2026, 11, 23, 7, 30, tzinfo=dt.UTC), stop_id="S-1203", route_id="300",
    action=Action.TAP, outcome=TapOutcome.ACCEPTED, reason=None, method=Method.EMV,
    pan_token="ab" * 16, pan_masked="623190*********0014", aid="A000000333010101", amount=200,
    currency="CNY", rider_category="senior", fare_media="unionpay-quickpass",
    deny_list_version=77, fare_table_version=3, oda="fdda-rsa", oda_ok=True, atc=4321,
    cryptogram=bytes(8), cid=0x40, iad=bytes.fromhex("0701010360000000"), aip=b"\x20\x00",
    ac_data=bytes(39), scheme="tdes")
PAYLOAD = encode(RECORD)


def test_encode_tap_record(benchmark: Any) -> None:
    out = benchmark(encode, RECORD)
    benchmark.extra_info["bytes"] = len(out)
    assert len(out) < 300
    assert median_seconds(benchmark) < 20e-6


def test_decode_tap_record(benchmark: Any) -> None:
    assert benchmark(decode, PAYLOAD, TapRecord) == RECORD
    benchmark.extra_info["records_per_s"] = round(1 / median_seconds(benchmark))
    assert median_seconds(benchmark) < 20e-6


def test_open_signed_snapshot_of_100k_tokens(benchmark: Any) -> None:
    key = generate_signing_key()
    snap = DenyListSnapshot(version=9, issued_at=dt.datetime(2026, 11, 23, tzinfo=dt.UTC),
                            tokens=[f"{i:032x}" for i in range(100_000)])
    signed = Signer(key).sign(snap)
    verifier = Verifier(key.public_key())
    opened = benchmark.pedantic(verifier.open, args=(signed, DenyListSnapshot), rounds=5)
    assert opened.version == 9 and len(opened.tokens) == 100_000
    benchmark.extra_info["bytes"] = len(signed)
    assert median_seconds(benchmark) < 0.25
