"""Which of the issuer's records memory keeps: one rule for a prune and for a bounded load.

The issuer's records stay in the database for ever; memory needs only what a request may
still refer to.  For a ``floor`` (the oldest time the holder still takes requests from:
the core's late-arrival floor, or ``tapsim issuer run``'s clock minus ``--retention``):

* authorizations from the floor on (a retried batch asks again with the same ids), and
  older ones that a deferred charge or a resubmission may still name: approved, verified
  account verifications and purchases no charge has completed yet, up to
  :data:`REFERENCE_REACH` before the floor (14 days of travel + 14 of retries);
* holds still active, and settled ones made from the floor on;
* captures from the floor on.

:meth:`issuer.service.Issuer.prune` drops the rest from memory, and
``backoffice.storage.sql.SqlStore.load_issuer_since`` reads exactly these rows (its SQL is
this rule in SQL; tests/test_issuer_prune.py checks that both keep the same records).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

from issuer.codes import ResponseCode
from issuer.models import AuthKind, AuthRecord, Capture, Hold, HoldStatus

REFERENCE_REACH: Final = timedelta(days=28)
# The kinds a DEFERRED or RESUBMISSION refers to (the cryptogram the issuer checked itself).
REFERENCE_KINDS: Final = (AuthKind.ACCOUNT_VERIFICATION, AuthKind.PURCHASE)


def keeps_auth(record: AuthRecord, floor: datetime) -> bool:
    """From the floor on, or an open verification within the reach before it."""
    at = record.at
    if at >= floor:
        return True
    return (record.completed_by is None and record.code is ResponseCode.APPROVED
            and record.cryptogram_verified and record.kind in REFERENCE_KINDS
            and at >= floor - REFERENCE_REACH)


def keeps_hold(hold: Hold, floor: datetime) -> bool:
    """Active (money still held), or settled from the floor on."""
    return hold.status is HoldStatus.ACTIVE or hold.created_at >= floor


def keeps_capture(capture: Capture, floor: datetime) -> bool:
    return capture.at >= floor


__all__ = ["REFERENCE_KINDS", "REFERENCE_REACH", "keeps_auth", "keeps_capture", "keeps_hold"]
