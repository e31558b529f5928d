"""ISO 4217 currencies: decimals per currency, and exact decimal text <-> integer minor units.

GTFS writes amounts as decimal text whose number of places is set by ISO 4217 for the currency
(CNY 2, JPY 0, KWD 3).  The engine counts only integer minor units, so the text is parsed with
``decimal.Decimal`` (never float) and must be exact in minor units.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

# Exponents of the active ISO 4217 codes that are not 2.  Every other active code has 2.
_EXPONENT_NOT_2: dict[str, int] = {
    # 0 decimals
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0, "PYG": 0,
    "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
    # 3 decimals
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
    # 4 decimals
    "CLF": 4, "UYW": 4,
}

_EXPONENT_2 = frozenset(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN
    BMD BND BOB BOV BRL BSD BTN BWP BYN BZD CAD CDF CHE CHF
    CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB
    EUR FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF
    IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR
    LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN
    MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR
    PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS
    SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS
    UAH USD USN UYU UZS VED VES WST XCD XCG YER ZAR ZMW ZWG
    """.split()  # noqa: SIM905 - a table, easier to read as words
)

_AMOUNT_RE = re.compile(r"-?[0-9]+(\.[0-9]+)?")


class CurrencyError(ValueError):
    """An unknown currency code, or an amount that is not exact in the currency's minor units."""


def exponent(code: str) -> int:
    """Number of decimals of an ISO 4217 currency (CNY -> 2, JPY -> 0, KWD -> 3)."""
    if code in _EXPONENT_NOT_2:
        return _EXPONENT_NOT_2[code]
    if code in _EXPONENT_2:
        return 2
    raise CurrencyError(f"unknown ISO 4217 currency code {code!r}")


def is_currency(code: str) -> bool:
    """True for an active ISO 4217 code this table knows."""
    return code in _EXPONENT_2 or code in _EXPONENT_NOT_2


def to_minor(text: str, code: str) -> int:
    """Decimal text ("2.00", "-0.50", "150" JPY) in ``code`` as integer minor units.

    The text must carry exactly the currency's decimals: "The currency amount must contain the
    number of decimal places specified by the norm ISO 4217 for the accompanying Currency code
    ... If the fare is 2 US Dollars, the amount is 2.00 instead of 2" (GTFS reference,
    fare_products.amount).  "2" or "2.000" for CNY is an error, as it is for MobilityData's
    validator.
    """
    places = exponent(code)
    if not _AMOUNT_RE.fullmatch(text):
        raise CurrencyError(f"amount {text!r} is not a plain decimal number")
    point = text.find(".")
    given = 0 if point < 0 else len(text) - point - 1
    if given != places:
        raise CurrencyError(
            f"amount {text!r} has {given} decimal{'s' if given != 1 else ''}; "
            f"{code} has {places} (write {_example(places)})")
    try:
        value = Decimal(text)
    except InvalidOperation as exc:  # pragma: no cover - the regex already guards this
        raise CurrencyError(f"amount {text!r} is not a decimal number") from exc
    return int(value.scaleb(places))


def _example(places: int) -> str:
    return "2" if places == 0 else "2." + "0" * places


def format_minor(amount: int, code: str) -> str:
    """Integer minor units as decimal text with the currency's decimals (-150 CNY -> "-1.50")."""
    places = exponent(code)
    if places == 0:
        return str(amount)
    sign = "-" if amount < 0 else ""
    whole, frac = divmod(abs(amount), 10**places)
    return f"{sign}{whole}.{frac:0{places}d}"
