"""The fare engine: GTFS-Fares v2 rules, journeys, transfers, caps, rider categories (pure).

Load a feed with ``load_feed`` (the only file I/O), then price taps with ``price`` (a batch) or
``price_tap`` (one tap against a card's ``CardFareState``).  See fare/README.md.
"""

from fare.engine import CardFareState, close_card, price, price_tap
from fare.errors import FeedError, FeedProblem, TapError
from fare.explain import Charge, ChargeKind
from fare.gtfs import load_feed
from fare.model import Feed, Tap

__all__ = [
    "CardFareState",
    "Charge",
    "ChargeKind",
    "Feed",
    "FeedError",
    "FeedProblem",
    "Tap",
    "TapError",
    "close_card",
    "load_feed",
    "price",
    "price_tap",
]
