"""issuer.models.evolve: the same copy as dataclasses.replace, for every record type."""

import dataclasses
import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from issuer.codes import ResponseCode
from issuer.models import (
    Account,
    AccountStatus,
    AuthKind,
    AuthRecord,
    Card,
    CardState,
    Hold,
    HoldStatus,
    WrappedKey,
    evolve,
)

T0 = dt.datetime(2026, 3, 2, 8, tzinfo=dt.UTC)
ACCOUNT = Account("a1", "bank", "CNY", 500, 20, AccountStatus.OPEN, T0, T0)
CARD = Card("tok", "623100******0017", "01", "a1", "bank", "tdes", WrappedKey("kek1", b"x" * 24),
            T0 + dt.timedelta(days=900), CardState.ACTIVE, T0, recent_atcs=frozenset({3, 4}))
RECORD = AuthRecord("r1", "tok", AuthKind.ACCOUNT_VERIFICATION, 0, "CNY", "m",
                    ResponseCode.APPROVED, frozenset(), T0, 7, bytes(8), True, None, None)
HOLD = Hold("h1", "a1", "tok", "m", 400, "CNY", T0)
RECORDS = [ACCOUNT, CARD, RECORD, HOLD]
values = st.one_of(st.integers(), st.text(max_size=5), st.none(), st.booleans())


@st.composite
def record_and_changes(draw: st.DrawFn) -> tuple[object, dict[str, object]]:
    record = draw(st.sampled_from(RECORDS))
    names = [f.name for f in dataclasses.fields(record)]  # type: ignore[arg-type]
    chosen = draw(st.lists(st.sampled_from(names), unique=True, max_size=4))
    return record, {name: draw(values) for name in chosen}


@settings(deadline=None)  # the first copier of a pair is built on first use
@given(record_and_changes())
def test_evolve_is_dataclasses_replace(case: tuple[object, dict[str, object]]) -> None:
    record, changes = case
    before = dataclasses.astuple(record)  # type: ignore[call-overload]
    new = evolve(record, **changes)
    assert new == dataclasses.replace(record, **changes)  # type: ignore[type-var]
    assert type(new) is type(record)
    assert dataclasses.astuple(record) == before  # type: ignore[call-overload]  # untouched


def test_the_same_fields_in_another_order_copy_the_same() -> None:
    a = evolve(ACCOUNT, balance=1, held=0)
    b = evolve(ACCOUNT, held=0, balance=1)
    assert a == b == dataclasses.replace(ACCOUNT, balance=1, held=0)


def test_the_copy_is_still_frozen() -> None:
    new = evolve(HOLD, amount=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        new.amount = 2  # type: ignore[misc]


def test_unknown_fields_are_named() -> None:
    with pytest.raises(TypeError, match=r"Card has no field\(s\) colour, size"):
        evolve(CARD, size=1, colour="red")


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_records_built_by_the_slot_init_are_the_dataclass_fields(record: object) -> None:
    cls = type(record)
    fields = dataclasses.fields(record)  # type: ignore[arg-type]
    values = [getattr(record, f.name) for f in fields]
    by_position = cls(*values)
    by_name = cls(**{f.name: v for f, v in zip(fields, values, strict=True)})
    assert by_position == by_name == record
    assert [getattr(by_position, f.name) for f in fields] == values
    required = [f for f in fields if f.default is dataclasses.MISSING]
    with pytest.raises(TypeError, match="missing"):
        cls(*values[: len(required) - 1])
    with pytest.raises(TypeError, match="unexpected keyword"):
        cls(*values, colour="red")


def test_defaults_still_apply() -> None:
    hold = Hold("h2", "a1", "tok", "m", 1, "CNY", T0)
    assert (hold.status, hold.settled_at) == (HoldStatus.ACTIVE, None)
    card = Card("t", "m", "01", "a1", "b", "sm4", WrappedKey("k", b""), T0, CardState.ACTIVE, T0)
    assert (card.atc_floor, card.recent_atcs, card.replacement) == (-1, frozenset(), None)
