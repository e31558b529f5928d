"""The tap record gate: what is accepted, and a named reason for everything that is not."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backoffice.taps import MalformedTapError, TapRecord, parse_tap, scrub, tap_to_mapping
from tests.core_fixtures import T0, TestCard, pan_for


def good() -> dict[str, object]:
    return dict(tap_to_mapping(TestCard(pan_for(1)).tap("tap-1", T0)))


def test_text_form_round_trips() -> None:
    tap = TestCard(pan_for(1)).tap("tap-1", T0)
    assert parse_tap(tap_to_mapping(tap)) == tap
    assert parse_tap(tap) is tap


BAD: list[tuple[str, object, str]] = [
    ("tap_id", "", "missing"),
    ("tap_id", "has space", "1-64"),
    ("tap_id", "x" * 65, "1-64"),
    ("pan_token", "ABC", "32 lowercase hex"),
    ("masked_pan", "6231900000000000014", "at most the first 6"),
    ("time", "2026-03-02T08:00:00", "UTC offset"),
    ("time", "yesterday", "ISO 8601"),
    ("action", "jump", "one of"),
    ("atc", "-1", "decimal"),
    ("atc", 70000, "0..65535"),
    ("atc", True, "integer"),
    ("arqc", "00112233", "8 bytes"),
    ("arqc", "zz" * 8, "hexadecimal"),
    ("ac_data", "0", "whole bytes"),
    ("scheme", "TDES!", "scheme name"),
    ("rider_category", "a b", "up to 32"),
    ("operator_id", 5, "must be text"),
    ("stop_id", None, "missing"),
]


@pytest.mark.parametrize(("field", "value", "reason"), BAD)
def test_each_malformed_field_is_named(field: str, value: object, reason: str) -> None:
    raw = good()
    raw[field] = value
    with pytest.raises(MalformedTapError) as info:
        parse_tap(raw)
    assert info.value.field == field
    assert reason in info.value.reason


def test_clear_card_data_is_refused_and_never_echoed() -> None:
    raw = good()
    raw["pan"] = pan_for(1)
    with pytest.raises(MalformedTapError) as info:
        parse_tap(raw)
    assert info.value.field == "pan"
    assert pan_for(1) not in str(info.value)
    assert pan_for(1) not in scrub(raw)
    assert "623190*********" in scrub(raw)


def test_not_a_mapping() -> None:
    with pytest.raises(MalformedTapError, match="mapping"):
        parse_tap(["not", "a", "record"])  # type: ignore[arg-type]


@given(st.integers(min_value=10**11, max_value=10**19 - 1))
def test_scrub_masks_every_pan_like_digit_run(n: int) -> None:
    digits = str(n)
    text = scrub({"note": f"card {digits} seen"})
    assert digits not in text
    assert json.loads(text)["note"].startswith("card " + digits[:6])


def test_tap_record_is_hashable_and_frozen() -> None:
    tap = TestCard(pan_for(2)).tap("tap-2", T0)
    assert isinstance(hash(tap), int)
    with pytest.raises(AttributeError):
        tap.tap_id = "other"  # type: ignore[misc]
    assert isinstance(tap, TapRecord)
