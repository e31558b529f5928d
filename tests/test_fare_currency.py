import pytest
from hypothesis import given
from hypothesis import strategies as st

from fare.currency import CurrencyError, exponent, format_minor, to_minor


@pytest.mark.parametrize(("code", "places"), [("CNY", 2), ("JPY", 0), ("KWD", 3), ("USD", 2),
                                              ("EUR", 2), ("CLF", 4)])
def test_exponents(code: str, places: int) -> None:
    assert exponent(code) == places


@pytest.mark.parametrize(("text", "code", "minor"), [
    ("2.00", "CNY", 200), ("-0.50", "USD", -50), ("150", "JPY", 150), ("1.234", "KWD", 1234),
    ("0.0000", "CLF", 0),
])
def test_to_minor(text: str, code: str, minor: int) -> None:
    assert to_minor(text, code) == minor


# GTFS reference, fare_products.amount: "The currency amount must contain the number of decimal
# places specified by the norm ISO 4217 for the accompanying Currency code ... If the fare is 2
# US Dollars, the amount is 2.00 instead of 2."
@pytest.mark.parametrize(("text", "code"), [
    ("2.005", "CNY"), ("1.5", "JPY"), ("1e2", "USD"), ("", "USD"), ("abc", "USD"),
    ("1.0001", "KWD"), ("2", "USD"), ("2", "EUR"), ("2.0", "CNY"), ("2.000", "CNY"),
    ("150.0", "JPY"), ("1.23", "KWD"),
])
def test_to_minor_rejects(text: str, code: str) -> None:
    with pytest.raises(CurrencyError):
        to_minor(text, code)


def test_unknown_currency() -> None:
    with pytest.raises(CurrencyError, match="XXY"):
        exponent("XXY")


@given(st.integers(min_value=-10**9, max_value=10**9), st.sampled_from(["CNY", "JPY", "KWD"]))
def test_format_round_trips(amount: int, code: str) -> None:
    assert to_minor(format_minor(amount, code), code) == amount
