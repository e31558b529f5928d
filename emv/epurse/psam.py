"""The validator's PSAM (purchase secure access module) as a plain object: no I/O, no clock.

A real PSAM is a second chip in the validator.  It holds the issuers' purchase master keys,
diversifies the card's purchase key from the card number, computes MAC1, checks MAC2, and
numbers the terminal's transactions (the terminal transaction serial, 4 bytes).  Here it is
an object the purchase flow is given; it also remembers, per card, the last offline serial
it completed (to refuse a card whose counter went backwards: a restored or cloned card) and
the purchase it sent a DEBIT for but never got the answer to (a torn purchase), which the
next tap of that card resolves without charging twice.

What it remembers is keyed by a keyed hash of the card number (``card_ref``), never the
number itself, and holds no keys: a pending purchase keeps the card's random number and
serials, from which the PSAM recomputes the session key when it needs it.

Several issuers (T-Union cities, ``emv.epurse.issuers``): a PSAM holds each accepted issuer's
purchase master keys under its issuer id and picks them by the card's issuer id (its city
code); ``purchase_keys`` given alone serve every card whose issuer has no keys of its own
(single-city behaviour, and issuer 0000, the shipped profiles' default).  ``to_dict``
gives that state to save (master keys are not part of it; they are given at construction).
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from emv.epurse import keys
from emv.epurse.issuers import TEST_ISSUERS
from emv.epurse.keys import Algorithm, algorithm_from_id
from emv.epurse.messages import PurchaseInit

MAX_TERMINAL_SERIAL = 0xFFFFFFFF
TEST_TERMINAL_ID = bytes.fromhex("310000000001")
TEST_PURCHASE_KEYS: Mapping[tuple[int, int], bytes] = {
    (0x01, keys.ALGORITHM_IDS["tdes"]): keys.TEST_PURCHASE_MASTER_KEY,
    (0x01, keys.ALGORITHM_IDS["sm4"]): keys.TEST_PURCHASE_MASTER_KEY,
}
"""The TEST purchase master key, version 01, for 3DES and SM4 cards (public: tests, demos)."""


class PsamError(ValueError):
    """The PSAM cannot do what was asked (unknown key, serial exhausted, bad argument)."""


@dataclass(frozen=True)
class PurchaseSession:
    """One purchase as the PSAM numbered it: enough to recompute its session key, not the key."""

    card_ref: str
    card_serial: int
    random: str  # hex
    key_version: int
    algorithm_id: int
    terminal_serial: int
    amount: int
    when: str  # hex, 7 bytes BCD
    balance_before: int
    mac1: str  # hex
    issuer: str = ""  # the card's issuer id ("" in states saved before issuers existed)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PurchaseSession:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


class Psam:
    """A terminal's PSAM: purchase master keys by (key version, algorithm id), and per issuer
    id for other issuers' cards, its terminal number and its transaction serial."""

    def __init__(self, terminal_id: bytes, purchase_keys: Mapping[tuple[int, int], bytes], *,
                 serial: int = 0, key_index: int = 1, memory: int = 4096,
                 issuer_keys: Mapping[str, Mapping[tuple[int, int], bytes]] | None = None
                 ) -> None:
        if len(terminal_id) != 6:
            raise PsamError(f"terminal number is 6 bytes, got {len(terminal_id)}")
        if not 0 <= serial <= MAX_TERMINAL_SERIAL:
            raise PsamError("terminal transaction serial is 4 bytes")
        tables = [purchase_keys, *(issuer_keys or {}).values()]
        for table in tables:
            for (version, algorithm_id), key in table.items():
                if algorithm_from_id(algorithm_id) is None or len(key) != keys.KEY_SIZE:
                    raise PsamError(f"purchase key version {version:02X}: unknown algorithm "
                                    f"{algorithm_id:02X} or not a 16-byte key")
        self.terminal_id = terminal_id
        self.key_index = key_index
        self._keys = dict(purchase_keys)
        self._issuer_keys = {i.upper(): dict(t) for i, t in (issuer_keys or {}).items()}
        self._serial = serial
        self._memory = memory
        self._ref_key = hashlib.sha256(
            b"tapsim-psam-card-ref" + b"".join(self._keys[k] for k in sorted(self._keys))
        ).digest()
        self._pending: dict[str, PurchaseSession] = {}
        self._seen: OrderedDict[str, int] = OrderedDict()

    @classmethod
    def test(cls, terminal_id: bytes = TEST_TERMINAL_ID, serial: int = 0) -> Psam:
        """A PSAM with the TEST purchase master key (version 01) for both 3DES and SM4, and
        the purchase keys of every TEST city (``emv.epurse.issuers.TEST_ISSUERS``)."""
        return cls(terminal_id, TEST_PURCHASE_KEYS, serial=serial,
                   issuer_keys=TEST_ISSUERS.purchase_keys())

    @property
    def serial(self) -> int:
        """The last terminal transaction serial used (0: none yet)."""
        return self._serial

    def _table(self, issuer: str) -> Mapping[tuple[int, int], bytes]:
        return self._issuer_keys.get(issuer.upper(), self._keys)

    def supports(self, key_version: int, algorithm_id: int, issuer: str = "") -> bool:
        """True when this PSAM holds the purchase key of the card's issuer, version, algorithm."""
        return (key_version, algorithm_id) in self._table(issuer)

    def card_ref(self, card_number: str) -> str:
        """The keyed hash the PSAM files a card under (no card number is kept in clear)."""
        return hmac.digest(self._ref_key, card_number.encode("ascii"), "sha256").hex()[:32]

    # --- MACs ---------------------------------------------------------------------------

    def _session_key(self, card_number: str, s: PurchaseSession) -> tuple[bytes, Algorithm]:
        algorithm = algorithm_from_id(s.algorithm_id)
        master = self._table(s.issuer).get((s.key_version, s.algorithm_id))
        if algorithm is None or master is None:
            raise PsamError(f"no purchase key version {s.key_version:02X} "
                            f"for algorithm {s.algorithm_id:02X}")
        card_key = keys.diversify(master, card_number, algorithm)
        return keys.purchase_session_key(card_key, bytes.fromhex(s.random), s.card_serial,
                                         s.terminal_serial, algorithm), algorithm

    def begin_purchase(self, card_number: str, init: PurchaseInit, amount: int,
                       when: bytes, issuer: str = "") -> PurchaseSession:
        """Number the next purchase and compute its MAC1 (the serial is spent even if the
        card never sees it, so serials only ever go up)."""
        if self._serial >= MAX_TERMINAL_SERIAL:
            raise PsamError("terminal transaction serial exhausted")
        if len(when) != 7:
            raise PsamError("date and time are 7 bytes BCD")
        if not self.supports(init.key_version, init.algorithm_id, issuer):
            raise PsamError(f"no purchase key version {init.key_version:02X} "
                            f"for algorithm {init.algorithm_id:02X}")
        self._serial += 1
        session = PurchaseSession(
            card_ref=self.card_ref(card_number), card_serial=init.serial,
            random=init.random.hex(), key_version=init.key_version,
            algorithm_id=init.algorithm_id, terminal_serial=self._serial, amount=amount,
            when=when.hex(), balance_before=init.balance, mac1="", issuer=issuer.upper())
        key, algorithm = self._session_key(card_number, session)
        mac1 = keys.mac(key, keys.purchase_mac1_input(amount, self.terminal_id, when), algorithm)
        return PurchaseSession(**{**session.to_dict(), "mac1": mac1.hex()})

    def verify_mac2(self, card_number: str, session: PurchaseSession, mac2: bytes) -> bool:
        """True when the card's MAC2 proves it holds the purchase key and took the amount."""
        if session.card_ref != self.card_ref(card_number):
            return False
        key, algorithm = self._session_key(card_number, session)
        expected = keys.mac(key, session.amount.to_bytes(4, "big"), algorithm)
        return hmac.compare_digest(expected, mac2)

    # --- what it remembers ----------------------------------------------------------------

    def hold(self, session: PurchaseSession) -> None:
        """A DEBIT is on its way: keep the purchase until the card's answer settles it."""
        self._pending[session.card_ref] = session

    def pending(self, card_number: str) -> PurchaseSession | None:
        return self._pending.get(self.card_ref(card_number))

    def release(self, card_number: str) -> None:
        self._pending.pop(self.card_ref(card_number), None)

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def last_serial(self, card_number: str) -> int | None:
        """The card's offline serial in the last purchase this PSAM completed with it."""
        return self._seen.get(self.card_ref(card_number))

    def completed(self, card_number: str, card_serial: int) -> None:
        ref = self.card_ref(card_number)
        self._seen.pop(ref, None)
        self._seen[ref] = card_serial
        while len(self._seen) > self._memory:
            self._seen.popitem(last=False)

    # --- state ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Serial, pending purchases and seen serials (no keys, no card numbers)."""
        return {"terminal_id": self.terminal_id.hex().upper(), "serial": self._serial,
                "pending": [s.to_dict() for s in self._pending.values()],
                "seen": dict(self._seen)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any],
                  purchase_keys: Mapping[tuple[int, int], bytes],
                  issuer_keys: Mapping[str, Mapping[tuple[int, int], bytes]] | None = None
                  ) -> Psam:
        """A PSAM restored from ``to_dict`` with the same master keys given again (its card
        references are keyed by them: other keys, and it no longer knows the cards)."""
        try:
            psam = cls(bytes.fromhex(data["terminal_id"]), purchase_keys,
                       serial=int(data["serial"]), issuer_keys=issuer_keys)
            for raw in data.get("pending", []):
                session = PurchaseSession.from_dict(raw)
                psam._pending[session.card_ref] = session
            for ref, serial in dict(data.get("seen", {})).items():
                psam._seen[str(ref)] = int(serial)
        except (KeyError, TypeError, ValueError) as exc:
            raise PsamError(f"not a saved PSAM state ({exc.__class__.__name__}: {exc})") from None
        return psam
