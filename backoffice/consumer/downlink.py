"""The back office's downlink: the versioned deny list and the fare table version, signed.

The core writes every deny-list change as an ordered event (``deny_events``, numbered by
the database); the event number *is* the deny list's version.  A snapshot is the
``deny_list`` table at the highest event number, a delta from version ``a`` to ``b`` is the
events ``a < seq <= b`` netted per token (the last change of a token wins, so ``add`` and
``remove`` are disjoint, as :func:`wire.versioning.check_delta` wants).  Versions therefore
only move forward across restarts, and two back-office runs on one database agree on them.
Everything is signed with the back office's Ed25519 key (:class:`wire.signing.Signer`).

The fare table version is kept in the database's meta table: the same feed (same SHA-256 of
its files) keeps its version, a changed feed gets the next one, effective from the moment
the back office first ran it.

:class:`DownlinkBook` reads the store, so it runs on the writer's thread like the core.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from backoffice.records import DenyEventRow
from backoffice.storage.base import Store
from wire.messages import MAX_DELTA_TOKENS, DenyListDelta, DenyListSnapshot, FareTableVersion
from wire.signing import Signer

DENY_VERSION_KEY = "backoffice.denylist.version"
# Added to the deny-event sequence to make the published version: raised when validators
# already hold a later version than this database (a restored backup), so versions only grow.
DENY_BASE_KEY = "backoffice.denylist.version_base"
FARE_SHA_KEY = "backoffice.fare.sha256"
FARE_VERSION_KEY = "backoffice.fare.version"
FARE_FROM_KEY = "backoffice.fare.effective_from"

Clock = Callable[[], dt.datetime]


def net_delta(events: Iterable[tuple[int, DenyEventRow]]) -> tuple[list[str], list[str]]:
    """(add, remove) tokens of a run of deny-list events: each token's last change wins."""
    last: dict[str, str] = {}
    for _, event in events:
        last[event.pan_token] = event.op
    add = sorted(t for t, op in last.items() if op == "add")
    remove = sorted(t for t, op in last.items() if op != "add")
    return add, remove


def feed_digest(path: Path) -> bytes:
    """SHA-256 of a fare feed (a zip as it is; a folder: its GTFS ``.txt`` files, by name)."""
    h = hashlib.sha256()
    if path.is_file():
        h.update(path.read_bytes())
        return h.digest()
    for file in sorted(p for p in path.rglob("*.txt") if p.is_file()):
        rel = file.relative_to(path).as_posix()
        data = file.read_bytes()
        h.update(f"{rel}\0{len(data)}\0".encode())
        h.update(data)
    return h.digest()


_NOT_IDENT = re.compile(r"[^A-Za-z0-9._:/-]+")


def table_id(name: str) -> str:
    """A feed's name as a wire identifier (``[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}``)."""
    ident = _NOT_IDENT.sub("-", name).strip("-._:/")[:64]
    return ident or "fare-table"


@dataclass(frozen=True, slots=True)
class DeltaMessage:
    from_version: int
    to_version: int
    payload: bytes  # signed


class DownlinkBook:
    """Deny-list versions and the signed messages that carry them (writer thread only)."""

    def __init__(self, store: Store, signer: Signer, clock: Clock) -> None:
        self.store = store
        self.signer = signer
        self.clock = clock
        self.seq = int(store.meta(DENY_VERSION_KEY) or 0)  # last deny event published
        self.base = int(store.meta(DENY_BASE_KEY) or 0)
        # Events the meta row has not caught up with (a crash between commit and meta).
        self.catch_up()

    @property
    def version(self) -> int:
        """The version validators see: the event sequence plus the base."""
        return self.seq + self.base

    def raise_floor(self, held: int) -> bool:
        """Validators may hold ``held`` (the broker's retained snapshot says so): when this
        database is behind it (restored from a backup), the next version is ``held + 1``,
        so validators take the next snapshot instead of ignoring it as stale."""
        if held <= self.version:  # the usual restart: the broker holds what we published
            return False
        self.base = held + 1 - self.seq
        self.store.set_meta(DENY_BASE_KEY, str(self.base))
        return True

    def catch_up(self) -> list[tuple[int, DenyEventRow]]:
        """Events since the held version; moves the version to the last of them."""
        events = self.store.deny_events(after_seq=self.seq)
        if events:
            self.seq = events[-1][0]
            self.store.set_meta(DENY_VERSION_KEY, str(self.seq))
        return events

    def snapshot(self) -> tuple[int, bytes]:
        """(version, signed snapshot) of the whole list as it is now."""
        self.catch_up()
        tokens = [row.pan_token for row in self.store.deny_list()]
        msg = DenyListSnapshot(version=self.version, issued_at=self.clock(), tokens=tokens)
        return self.version, self.signer.sign(msg)

    def changes(self) -> DeltaMessage | None:
        """The signed delta since the held version, or None when nothing changed or it is too
        big for one delta (validators then close the gap with the next snapshot)."""
        start = self.version
        events = self.catch_up()
        if not events:
            return None
        add, remove = net_delta(events)
        if len(add) > MAX_DELTA_TOKENS or len(remove) > MAX_DELTA_TOKENS:
            return None
        msg = DenyListDelta(from_version=start, to_version=self.version, issued_at=self.clock(),
                            add=add, remove=remove)
        return DeltaMessage(start, self.version, self.signer.sign(msg))


def fare_version(store: Store, name: str, digest: bytes, now: dt.datetime) -> FareTableVersion:
    """The fare table version for this feed, recorded in the store (a new feed: the next)."""
    held = store.meta(FARE_SHA_KEY)
    version = int(store.meta(FARE_VERSION_KEY) or 0)
    since = store.meta(FARE_FROM_KEY)
    if held != digest.hex() or since is None:
        version += 1
        since = now.astimezone(dt.UTC).isoformat()
        # The digest last: a crash in between costs a version number, never a stale table.
        store.set_meta(FARE_VERSION_KEY, str(version))
        store.set_meta(FARE_FROM_KEY, since)
        store.set_meta(FARE_SHA_KEY, digest.hex())
    return FareTableVersion(version=version, table_id=table_id(name), sha256=digest,
                            effective_from=dt.datetime.fromisoformat(since), issued_at=now)


__all__ = [
    "DENY_BASE_KEY", "DENY_VERSION_KEY", "DeltaMessage", "DownlinkBook", "fare_version",
    "feed_digest", "net_delta", "table_id",
]
