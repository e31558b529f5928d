"""The version rules a receiver applies to downlink messages, shared so both ends agree.

Versions only move forward.  A snapshot replaces the list when it is newer than what the
receiver holds; a delta applies only on top of exactly its ``from_version``.  A repeated
retained snapshot (every reconnect re-delivers it) is therefore ``stale``, and a delta that
skips ahead is a ``gap`` the receiver closes with the next snapshot.
"""

from __future__ import annotations

from wire.errors import Reason, WireError
from wire.messages import DenyListDelta, DenyListSnapshot, FareTableVersion


def check_snapshot(current: int, snap: DenyListSnapshot) -> None:
    """Raise STALE unless ``snap`` is newer than the held version ``current``."""
    if snap.version <= current:
        raise WireError(Reason.STALE, f"snapshot version {snap.version} <= held {current}")


def check_delta(current: int, delta: DenyListDelta) -> None:
    """Raise INVALID, STALE or GAP unless ``delta`` applies on top of ``current``."""
    if delta.to_version <= delta.from_version:
        raise WireError(Reason.INVALID, f"delta {delta.from_version}->{delta.to_version} "
                                        "does not move forward")
    overlap = set(delta.add) & set(delta.remove)
    if overlap:
        raise WireError(Reason.INVALID, f"delta {delta.from_version}->{delta.to_version} both "
                                        f"adds and removes {len(overlap)} token(s)")
    if delta.to_version <= current:
        raise WireError(Reason.STALE, f"delta to {delta.to_version} <= held {current}")
    if delta.from_version != current:
        raise WireError(Reason.GAP, f"delta from {delta.from_version}, held {current}")


def check_fare_version(current: int, msg: FareTableVersion) -> None:
    if msg.version <= current:
        raise WireError(Reason.STALE, f"fare table version {msg.version} <= held {current}")
