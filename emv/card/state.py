"""The part of a card that changes: counters, offline spending, e-purse balance.

Kept apart from the personalised image so it can be saved after a tap and loaded
before the next (``tapsim tap`` keeps it under the user's state directory), and so
a simulation can hold thousands of cards as small state objects over one shared
image per profile.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any


@dataclass
class AppState:
    atc: int = 0
    offline_spent: int = 0  # minor units approved offline since personalisation
    balance: int = 0  # e-purse balance, minor units
    purchase_counter: int = 0  # e-purse offline transaction serial number
    load_counter: int = 0  # e-purse online (load) transaction serial number
    log: list[dict[str, Any]] = field(default_factory=list)
    # e-purse: last terminal serial accepted per terminal number (hex), a few terminals deep,
    # and the proof (serial, TAC, MAC2) of the last transaction of each type ("06", "02").
    terminal_serials: dict[str, int] = field(default_factory=dict)
    proofs: dict[str, dict[str, Any]] = field(default_factory=dict)
    challenges: int = 0  # e-purse INITIALIZE commands answered (feeds the card's random number)


@dataclass
class CardState:
    apps: dict[str, AppState] = field(default_factory=dict)  # by AID hex

    def app(self, aid: bytes) -> AppState:
        return self.apps.setdefault(aid.hex().upper(), AppState())

    def to_dict(self) -> dict[str, Any]:
        return {"apps": {aid: copy.deepcopy(vars(s)) for aid, s in self.apps.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CardState:
        apps = {}
        for aid, raw in data.get("apps", {}).items():
            known = {k: v for k, v in raw.items() if k in AppState.__dataclass_fields__}
            apps[aid] = AppState(**known)
        return cls(apps)
