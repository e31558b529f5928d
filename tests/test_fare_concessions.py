from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fare.concessions import (
    AgeRule,
    ConcessionError,
    age_on,
    birth_date_from_id,
    rider_category_for,
)

SAMPLE_ID = "11010519491231002X"  # the standard's worked example: born 1949-12-31


def test_birth_date_and_check_character() -> None:
    assert birth_date_from_id(SAMPLE_ID) == date(1949, 12, 31)
    assert birth_date_from_id(SAMPLE_ID.lower()) == date(1949, 12, 31)


@pytest.mark.parametrize("bad", ["110105194912310021", "1101051949123100", "11010519491331002X",
                                 "A1010519491231002X"])
def test_bad_numbers_are_refused_without_echo(bad: str) -> None:
    with pytest.raises(ConcessionError) as info:
        birth_date_from_id(bad)
    assert bad[:10] not in str(info.value)


def test_categories_by_age() -> None:
    rules = [AgeRule("senior", 65), AgeRule("student", 6, 18)]
    born = date(1960, 3, 3)
    assert rider_category_for(born, date(2025, 3, 2), rules, "adult") == "adult"
    assert rider_category_for(born, date(2025, 3, 3), rules, "adult") == "senior"
    assert rider_category_for(date(2010, 1, 1), date(2025, 3, 3), rules) == "student"


@given(st.dates(min_value=date(1900, 1, 1), max_value=date(2020, 12, 31)),
       st.integers(min_value=0, max_value=100))
def test_age_is_whole_years(birth: date, years: int) -> None:
    try:
        birthday = birth.replace(year=birth.year + years)
    except ValueError:  # 29 February in a common year
        birthday = date(birth.year + years, 3, 1)
    assert age_on(birth, birthday) == years
