"""T-Union card issuers (cities) and their e-purse master keys: who holds which key.

A T-Union e-purse names its issuer in its public data (``PublicData.city_code``, 2 bytes,
shown here as 4 hex digits: the issuer id).  The issuer personalises its cards with keys
diversified from its own master keys (``emv.epurse.keys``), one per (key version,
algorithm id):

* purchase master key: every validator's PSAM needs it to compute MAC1 for that issuer's
  cards, so a PSAM holds the purchase keys of *every* issuer it accepts, filed under the
  issuer id, and picks by the card's issuer id, key version and algorithm;
* TAC master key: only the issuer (its clearing house) holds it; no PSAM ever does.  Clearing
  recomputes each purchase's TAC with it (``clearing/``);
* load master key: the issuer's bank branches only.

The T-Union layout public sources give (REFERENCE.md: JT/T 978 style commands, Proxmark3's
``read_t-union.py``) fixes the commands and records, not how a PSAM files keys of several
issuers; this registry is tapsim's model of that: one key set per issuer id (unsure: real
interoperability PSAMs may derive issuer keys from a national key by the issuer id; the
model keeps one key per issuer, which is what the clearing side needs either way).

TEST ONLY: the keys below are public in the source tree.  ``TEST_CITY_A`` (issuer id 0000,
the default of every shipped profile) carries the historic TEST keys, so single-city
behaviour is unchanged; ``TEST_CITY_B`` (issuer id 9901) has keys of its own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from emv.epurse.keys import (
    ALGORITHM_IDS,
    KEY_SIZE,
    TEST_LOAD_MASTER_KEY,
    TEST_PURCHASE_MASTER_KEY,
    TEST_TAC_MASTER_KEY,
    EpurseKeyError,
)

KeySlot = tuple[int, int]  # (key version, algorithm id)


def issuer_id_of(city_code: bytes) -> str:
    """The issuer id a card's public data names: its city code as 4 upper-case hex digits."""
    if len(city_code) != 2:
        raise EpurseKeyError(f"a city code is 2 bytes, got {len(city_code)}")
    return city_code.hex().upper()


def check_issuer_id(issuer_id: str) -> str:
    """An issuer id is 4 hex digits (the 2-byte city code); EpurseKeyError otherwise."""
    try:
        raw = bytes.fromhex(issuer_id)
    except ValueError:
        raw = b""
    if len(raw) != 2 or len(issuer_id) != 4:
        raise EpurseKeyError(f"issuer id {issuer_id!r}: 4 hex digits (the card's city code)")
    return issuer_id.upper()


@dataclass(frozen=True)
class EpurseIssuer:
    """One card issuer (a city's T-Union issuer) and its master keys per key slot."""

    issuer_id: str
    name: str
    purchase_keys: Mapping[KeySlot, bytes] = field(repr=False)
    tac_keys: Mapping[KeySlot, bytes] = field(repr=False)
    load_keys: Mapping[KeySlot, bytes] = field(repr=False)

    def __post_init__(self) -> None:
        check_issuer_id(self.issuer_id)
        for what, table in (("purchase", self.purchase_keys), ("TAC", self.tac_keys),
                            ("load", self.load_keys)):
            for (version, algorithm_id), key in table.items():
                if algorithm_id not in ALGORITHM_IDS.values() or len(key) != KEY_SIZE:
                    raise EpurseKeyError(
                        f"issuer {self.issuer_id} {what} key version {version:02X}: unknown "
                        f"algorithm {algorithm_id:02X} or not a {KEY_SIZE}-byte key")

    @property
    def city_code(self) -> bytes:
        return bytes.fromhex(self.issuer_id)


def _both_algorithms(key: bytes, version: int = 1) -> Mapping[KeySlot, bytes]:
    return MappingProxyType({(version, a): key for a in ALGORITHM_IDS.values()})


def _test_key(label: str) -> bytes:
    return hashlib.sha256(b"tapsim TEST e-purse key " + label.encode()).digest()[:KEY_SIZE]


TEST_CITY_A = EpurseIssuer(
    issuer_id="0000", name="TEST city A",
    purchase_keys=_both_algorithms(TEST_PURCHASE_MASTER_KEY),
    tac_keys=_both_algorithms(TEST_TAC_MASTER_KEY),
    load_keys=_both_algorithms(TEST_LOAD_MASTER_KEY))
TEST_CITY_B = EpurseIssuer(
    issuer_id="9901", name="TEST city B",
    purchase_keys=_both_algorithms(_test_key("9901 purchase")),
    tac_keys=_both_algorithms(_test_key("9901 tac")),
    load_keys=_both_algorithms(_test_key("9901 load")))


class IssuerRegistry:
    """The issuers a PSAM or a clearing house knows, by issuer id."""

    def __init__(self, issuers: Iterable[EpurseIssuer]) -> None:
        self._by_id: dict[str, EpurseIssuer] = {}
        for issuer in issuers:
            if issuer.issuer_id in self._by_id:
                raise EpurseKeyError(f"issuer {issuer.issuer_id} listed twice")
            self._by_id[issuer.issuer_id] = issuer

    def get(self, issuer_id: str) -> EpurseIssuer | None:
        return self._by_id.get(issuer_id.upper())

    def __iter__(self) -> Iterator[EpurseIssuer]:
        return iter(sorted(self._by_id.values(), key=lambda i: i.issuer_id))

    def __len__(self) -> int:
        return len(self._by_id)

    def purchase_keys(self) -> dict[str, Mapping[KeySlot, bytes]]:
        """What a PSAM that accepts every issuer here holds: purchase keys by issuer id."""
        return {i.issuer_id: i.purchase_keys for i in self._by_id.values()}

    def tac_key(self, issuer_id: str, key_version: int, algorithm_id: int) -> bytes | None:
        """The issuer's TAC master key for a slot, or None (unknown issuer or slot)."""
        issuer = self.get(issuer_id)
        return None if issuer is None else issuer.tac_keys.get((key_version, algorithm_id))


TEST_ISSUERS = IssuerRegistry((TEST_CITY_A, TEST_CITY_B))
"""Both TEST cities (public keys: tests, demos, the simulation)."""
