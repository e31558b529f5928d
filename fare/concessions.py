"""Concession categories from the card holder's identity data.

A third-generation social security card carries the holder's citizen identity number (GB 11643:
area code, birth date, sequence, check character).  A validator or back office derives the rider
category (e.g. ``senior`` from 65) from it on the card and puts only the category on the tap: the
number itself is never needed by pricing, and never appears in an error message here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"


class ConcessionError(ValueError):
    """An identity number that is not well formed (the message never repeats the number)."""


@dataclass(frozen=True, slots=True)
class AgeRule:
    """Riders aged ``min_age`` up to ``max_age`` (inclusive; None = no upper bound)."""

    rider_category_id: str
    min_age: int
    max_age: int | None = None


def birth_date_from_id(id_number: str) -> date:
    """Birth date in an 18-character PRC citizen identity number, after checking its check
    character (ISO 7064 MOD 11-2)."""
    text = id_number.strip().upper()
    if len(text) != 18 or not text[:17].isdigit() or text[17] not in _CHECK:
        raise ConcessionError("identity number must be 17 digits and a check character")
    total = sum(int(d) * w for d, w in zip(text[:17], _WEIGHTS, strict=True))
    if _CHECK[total % 11] != text[17]:
        raise ConcessionError("identity number check character does not match")
    try:
        return date(int(text[6:10]), int(text[10:12]), int(text[12:14]))
    except ValueError:
        raise ConcessionError("identity number holds no valid birth date") from None


def age_on(birth: date, day: date) -> int:
    """Completed years at ``day`` (a 29 February birthday counts from 1 March)."""
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def rider_category_for(birth: date, day: date, rules: Sequence[AgeRule],
                       default: str | None = None) -> str | None:
    """The first rule's category whose age range holds the holder's age on ``day``."""
    age = age_on(birth, day)
    for rule in rules:
        if age >= rule.min_age and (rule.max_age is None or age <= rule.max_age):
            return rule.rider_category_id
    return default
