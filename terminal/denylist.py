"""The validator's local deny list and fare table version, fed by signed downlink messages.

Every tap checks the deny list (a set lookup, under a lock because the downlink applies
changes from another thread), so the check costs nothing against the tap budget.
Changes come as signed snapshots (retained) and deltas (QoS 1); :class:`Downlink`
verifies them (:mod:`wire.signing`), applies the version rules
(:mod:`wire.versioning`), writes them to the deny store *before* changing memory, and
keeps deltas that arrive ahead of a gap until the snapshot that closes it.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass, field

from terminal.denystore import DenyStore
from wire import topics
from wire.errors import Reason, WireError
from wire.messages import DenyListDelta, DenyListSnapshot, FareTableVersion
from wire.signing import Verifier
from wire.versioning import check_delta, check_fare_version, check_snapshot

log = logging.getLogger("tapsim.terminal.downlink")

MAX_PENDING_DELTAS = 1000


class DenyList:
    """Version + token set; thread-safe lookups, atomic replacement."""

    def __init__(self, version: int = 0, tokens: set[str] | None = None) -> None:
        self._lock = threading.Lock()
        self._version = version
        self._tokens = tokens if tokens is not None else set()

    @property
    def version(self) -> int:
        return self._version

    def __contains__(self, token: object) -> bool:
        with self._lock:
            return token in self._tokens

    def __len__(self) -> int:
        return len(self._tokens)

    def tokens(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._tokens)

    def replace(self, version: int, tokens: set[str]) -> None:
        with self._lock:
            self._tokens = tokens
            self._version = version

    def update(self, version: int, add: list[str], remove: list[str]) -> None:
        with self._lock:
            self._tokens.difference_update(remove)
            self._tokens.update(add)
            self._version = version


@dataclass
class DownlinkStats:
    applied: Counter[str] = field(default_factory=Counter)  # by kind
    rejected: Counter[str] = field(default_factory=Counter)  # by reason


class Downlink:
    """Opens, checks and applies downlink messages; never raises on what arrives."""

    def __init__(self, verifier: Verifier, store: DenyStore,
                 deny_list: DenyList | None = None) -> None:
        self.verifier = verifier
        self.store = store
        if deny_list is None:
            version, tokens = store.load_deny_list()
            deny_list = DenyList(version, tokens)
        self.deny_list = deny_list
        self.fare_version = int(store.get_meta("fare_version", "0") or 0)
        self.fare_table_id = store.get_meta("fare_table_id")
        self._pending: dict[int, DenyListDelta] = {}  # by from_version
        self._same = False  # the message at hand repeats the version held
        self._lock = threading.Lock()  # one message at a time, whichever thread delivers
        self.stats = DownlinkStats()

    def handle(self, topic: str, payload: bytes) -> Reason | None:
        """Apply one message; None when applied, else the reason it was refused (logged)."""
        with self._lock:
            self._same = False
            try:
                self._handle(topic, payload)
            except WireError as exc:
                self.stats.rejected[exc.reason.value] += 1
                # The retained snapshot and fare version at the version held come again on
                # every reconnect: normal.  Anything older is not (a back office on a
                # restored database?) and must be seen.
                level = logging.DEBUG if exc.reason is Reason.STALE and self._same \
                    else logging.WARNING
                log.log(level, "downlink %s refused: %s", topic, exc)
                return exc.reason
            return None

    def _handle(self, topic: str, payload: bytes) -> None:
        expect = topics.downlink_type(topic)
        msg = self.verifier.open(payload, expect)
        if isinstance(msg, DenyListSnapshot | FareTableVersion):
            held = self.deny_list.version if isinstance(msg, DenyListSnapshot) \
                else self.fare_version
            self._same = msg.version == held
        if isinstance(msg, DenyListSnapshot):
            self._apply_snapshot(msg)
        elif isinstance(msg, DenyListDelta):
            self._apply_delta(msg)
        else:
            self._apply_fare(msg)

    def _apply_snapshot(self, snap: DenyListSnapshot) -> None:
        check_snapshot(self.deny_list.version, snap)
        tokens = set(snap.tokens)
        self.store.save_deny_snapshot(snap.version, tokens)
        self.deny_list.replace(snap.version, tokens)
        self.stats.applied["snapshot"] += 1
        log.info("deny list snapshot %d applied (%d tokens)", snap.version, len(tokens))
        self._drain_pending()

    def _apply_delta(self, delta: DenyListDelta) -> None:
        try:
            check_delta(self.deny_list.version, delta)
        except WireError as exc:
            if exc.reason is Reason.GAP and len(self._pending) < MAX_PENDING_DELTAS:
                self._pending[delta.from_version] = delta  # the next snapshot may close it
            raise
        self._store_delta(delta)
        self._drain_pending()

    def _store_delta(self, delta: DenyListDelta) -> None:
        self.store.save_deny_delta(delta.to_version, delta.add, delta.remove)
        self.deny_list.update(delta.to_version, delta.add, delta.remove)
        self.stats.applied["delta"] += 1
        log.info("deny list delta %d->%d applied (+%d -%d)", delta.from_version,
                 delta.to_version, len(delta.add), len(delta.remove))

    def _drain_pending(self) -> None:
        version = self.deny_list.version
        for old in [v for v in self._pending if v < version]:
            del self._pending[old]
        while (nxt := self._pending.pop(version, None)) is not None:
            check_delta(version, nxt)
            self._store_delta(nxt)
            version = self.deny_list.version

    def _apply_fare(self, msg: FareTableVersion) -> None:
        check_fare_version(self.fare_version, msg)
        self.store.set_meta("fare_version", str(msg.version))
        self.store.set_meta("fare_table_id", msg.table_id)
        self.fare_version, self.fare_table_id = msg.version, msg.table_id
        self.stats.applied["fare"] += 1
        log.info("fare table %s version %d announced", msg.table_id, msg.version)
