"""A back-office process for the crash test: ingest a file of taps in batches, then close.

``python -m tests.core_crash_child URL TAPS.jsonl BATCH CRASH_BATCH``

With CRASH_BATCH >= 0 the process stops in the middle of that batch's transaction (after
the taps rows are written, before the ledger entries) and says ``MIDBATCH`` on stdout, then waits
for the test to kill it with SIGKILL.  Every batch is re-sent from the start of the file,
as validators re-send what the back office never acknowledged.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from backoffice.service import TransactionCore
from backoffice.storage import SqlStore, open_store
from backoffice.taps import parse_tap
from tests.core_fixtures import BANKS, TOKEN_KEY, config, flat_pricer, keystore

SPEND_LIMIT = 600


def build(store: SqlStore) -> TransactionCore:
    return TransactionCore(
        store, flat_pricer(), keystore(), BANKS, TOKEN_KEY, config(spend_limit=SPEND_LIMIT)
    )


def main(argv: Sequence[str]) -> int:
    url, path, batch_size, crash_batch = argv[0], argv[1], int(argv[2]), int(argv[3])
    with open(path, encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh]
    store = open_store(url)
    current = {"batch": -1}
    if crash_batch >= 0:
        real = store._bulk_insert

        def stalling(table: str, fields: Sequence[str], rows: Sequence[Any]) -> None:
            if table == "ledger" and current["batch"] == crash_batch:
                print("MIDBATCH", flush=True)
                time.sleep(120)  # the test kills us here
            real(table, fields, rows)

        store._bulk_insert = stalling  # type: ignore[method-assign]
    core = build(store)
    end: datetime | None = None
    for start in range(0, len(records), batch_size):
        current["batch"] = start // batch_size
        batch = records[start : start + batch_size]
        now = max(parse_tap(r).time for r in batch)
        core.ingest(batch, now)
        print(f"committed {current['batch']}", flush=True)
        end = now
    if end is not None:
        core.close_due(end + timedelta(days=1))
    print("DONE", flush=True)
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
