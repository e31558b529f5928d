"""T-Union e-purse clearing: TACs verified with the card issuer's key, refusals with their
reason, daily batches per issuer, positions netted to the fen (see clearing/README.md).

The core (``core``, ``tac``, ``report``) is pure and imports only ``emv``; ``store`` is the
adapter to the back office's store (``backoffice.storage``).
"""

from clearing.core import Decision, PurseRecord, Reason, Settlement, clear_day, settle
from clearing.report import FORMATS, DayReport, as_csv, as_json, as_table, build
from clearing.tac import TacVerifier

__all__ = [
    "FORMATS", "DayReport", "Decision", "PurseRecord", "Reason", "Settlement", "TacVerifier",
    "as_csv", "as_json", "as_table", "build", "clear_day", "settle",
]
