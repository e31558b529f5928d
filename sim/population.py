"""The riders' cards: who pays how, with which card, in which state.

Cards are columns of numpy arrays (one row per card), drawn once per shard from the shares
in :class:`PopulationConfig`, so a population of millions costs a few arrays, not objects.
A card's PAN, token and issuer records are made the first time it taps (the issuer sees
the same card whenever that is; unseen cards cost nothing).

Classes follow the source documents: third-generation social security cards (UnionPay
QuickPass debit + T-Union e-purse + the holder's identity, from which the senior category
comes), in the national (SM2/SM4) or international (RSA/3DES) suite, and other UnionPay
debit cards.  Lifecycle states are those of DESIGN.md that decide a tap: financial function
not activated, lost, dormant, expired, and (an account matter) insufficient funds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from sim.errors import ConfigError

# Card kinds (column ``kind``) and the built-in profile each is made from.
KINDS = ("ss-sm", "ss-rsa", "bank")
KIND_PROFILE = {"ss-sm": "sscard3-sm", "ss-rsa": "sscard3", "bank": "unionpay-debit"}
SS_SM, SS_RSA, BANK = 0, 1, 2

# Payment path a card's holder uses (column ``path``); cash riders have no card.
CEMV, TUNION = 0, 1

CATEGORIES = ("adult", "senior", "student")
ADULT, SENIOR, STUDENT = 0, 1, 2

# T-Union card issuers (emv.epurse.issuers, the TEST cities): a rider's purse is the home
# city's (city A, the issuer of every shipped profile) or another city's (city B).
HOME_ISSUER, OTHER_ISSUER = "0000", "9901"
ISSUER_GROUPS = ("home", "other_city")

STATES = ("active", "not_activated", "lost", "dormant", "expired", "insufficient_funds")
ACTIVE, NOT_ACTIVATED, LOST, DORMANT, EXPIRED, INSUFFICIENT = range(6)


@dataclass(frozen=True, slots=True)
class PopulationConfig:
    """Shares (0..1) of riders and cards; defaults are plausible, not measured."""

    cash: float = 0.05  # boardings paid in cash
    tunion: float = 0.25  # card holders who pay from a T-Union e-purse
    # of the T-Union purse riders, those whose card another city issued (they pay from the
    # purse too); 0.2 x tunion 0.25 = 5 % of card holders: a modelling default, not measured
    other_city: float = 0.2
    social_security: float = 0.6  # bank-card taps made with a social security card
    sm: float = 0.7  # social security cards in the national suite (SM2/SM4)
    senior: float = 0.15  # social security card holders with the senior category
    student: float = 0.05  # e-purse holders with a student card
    not_activated: float = 0.05  # social security cards whose financial function is off
    lost: float = 0.003
    dormant: float = 0.01
    expired: float = 0.005
    insufficient: float = 0.02
    trips_per_card: float = 2.2  # boardings per card and day (sizes the population)
    topup: float = 0.6  # holders short of funds who top up within the recovery window
    epurse_mean_balance: int = 3000  # fen; e-purse balances are exponential around it

    def __post_init__(self) -> None:
        for name in ("cash", "tunion", "other_city", "social_security", "sm", "senior", "student",
                     "not_activated", "lost", "dormant", "expired", "insufficient", "topup"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"population.{name} is a share, 0..1: got {v}")
        if self.lost + self.dormant + self.expired + self.insufficient > 1.0:
            raise ConfigError("population: lifecycle shares add up to more than 1")
        if self.trips_per_card <= 0:
            raise ConfigError("population.trips_per_card must be positive")
        if self.epurse_mean_balance < 0:
            raise ConfigError("population.epurse_mean_balance must not be negative")


class Population:
    """``n`` cards of one shard (columns), and the random draw of who boards."""

    def __init__(self, cfg: PopulationConfig, n: int, rng: np.random.Generator) -> None:
        if n < 1:
            raise ConfigError(f"population needs at least one card, got {n}")
        self.cfg = cfg
        self.n = n
        u = rng.random((6, n))
        social = u[0] < cfg.social_security
        self.kind: NDArray[np.int8] = np.where(
            social, np.where(u[1] < cfg.sm, SS_SM, SS_RSA), BANK).astype(np.int8)
        # Only social security cards carry an e-purse in this model (T-Union on the card).
        self.path: NDArray[np.int8] = np.where(social & (u[2] < cfg.tunion / max(
            cfg.social_security, 1e-9)), TUNION, CEMV).astype(np.int8)
        # Another city's purse: the low end of the same uniform that made the holder a purse
        # rider, so no draw is added and every other column is as it was before.
        self.other: NDArray[np.bool_] = social & (u[2] < cfg.other_city * cfg.tunion / max(
            cfg.social_security, 1e-9))
        cat = np.full(n, ADULT, dtype=np.int8)
        cat[social & (u[3] < cfg.senior)] = SENIOR
        cat[(self.path == TUNION) & (cat == ADULT) & (u[3] > 1 - cfg.student)] = STUDENT
        self.category: NDArray[np.int8] = cat
        state = np.full(n, ACTIVE, dtype=np.int8)
        edges = np.cumsum([cfg.lost, cfg.dormant, cfg.expired, cfg.insufficient])
        v = u[4]
        state[v < edges[3]] = INSUFFICIENT
        state[v < edges[2]] = EXPIRED
        state[v < edges[1]] = DORMANT
        state[v < edges[0]] = LOST
        state[social & (u[5] < cfg.not_activated) & (state == ACTIVE)] = NOT_ACTIVATED
        self.state: NDArray[np.int8] = state
        self.atc: NDArray[np.int32] = rng.integers(1, 400, size=n).astype(np.int32)
        self.balance: NDArray[np.int64] = np.round(
            rng.exponential(cfg.epurse_mean_balance, size=n)).astype(np.int64)
        self.seen: NDArray[np.bool_] = np.zeros(n, dtype=bool)

    def draw(self, rng: np.random.Generator, k: int) -> NDArray[np.int64]:
        """Cards of ``k`` boarding riders; -1 for a rider paying cash."""
        cards = rng.integers(0, self.n, size=k)
        if self.cfg.cash > 0:
            cards[rng.random(k) < self.cfg.cash] = -1
        return cards

    def counts(self) -> dict[str, dict[str, int]]:
        return {
            "kind": {KINDS[i]: int((self.kind == i).sum()) for i in range(len(KINDS))},
            "path": {"cemv": int((self.path == CEMV).sum()),
                     "tunion": int((self.path == TUNION).sum())},
            "category": {CATEGORIES[i]: int((self.category == i).sum())
                         for i in range(len(CATEGORIES))},
            "purse_issuer": {"home": int(((self.path == TUNION) & ~self.other).sum()),
                             "other_city": int(self.other.sum())},
            "state": {STATES[i]: int((self.state == i).sum()) for i in range(len(STATES))},
        }


def population_size(expected_boardings: float, cfg: PopulationConfig) -> int:
    """Cards needed so each card boards ``trips_per_card`` times on average."""
    return max(50, round(expected_boardings * (1.0 - cfg.cash) / cfg.trips_per_card))
