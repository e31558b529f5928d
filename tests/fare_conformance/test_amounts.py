"""Amounts carry exactly the currency's ISO 4217 decimals.

Reference, fare_products.txt, amount: "The currency amount must contain the number of decimal
places specified by the norm ISO 4217 for the accompanying Currency code.  Example: If the fare
is 2 US Dollars, the amount is 2.00 instead of 2."  (Field types, Currency amount: "The number
of decimal places is specified by ISO 4217 for the accompanying Currency code.")
"""

from __future__ import annotations

import pytest

from fare.errors import FeedError
from tests.fare_helpers import feed

ROUTES = "route_id,route_short_name,route_type,network_id\nb,B,3,bus\n"
RULES = "network_id,fare_product_id\nbus,p\n"


@pytest.mark.parametrize(("amount", "currency"), [("2", "EUR"), ("2.0", "USD"),
                                                  ("2.000", "CNY"), ("200.0", "JPY"),
                                                  ("1.50", "KWD")])
def test_wrong_number_of_decimals_is_refused(amount: str, currency: str) -> None:
    with pytest.raises(FeedError) as err:
        feed(routes=ROUTES, fare_leg_rules=RULES,
             fare_products=f"fare_product_id,amount,currency\np,{amount},{currency}\n")
    where = [(p.file, p.line, p.field) for p in err.value.problems]
    assert where == [("fare_products.txt", 2, "amount")]


@pytest.mark.parametrize(("amount", "currency", "minor"), [("2.00", "EUR", 200),
                                                           ("200", "JPY", 200),
                                                           ("1.500", "KWD", 1500)])
def test_the_currencys_decimals_are_accepted(amount: str, currency: str, minor: int) -> None:
    f = feed(routes=ROUTES, fare_leg_rules=RULES,
             fare_products=f"fare_product_id,amount,currency\np,{amount},{currency}\n")
    assert f.fare_products["p"][0].amount == minor
