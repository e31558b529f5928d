"""The imperative shell: the core, the in-process issuer and a store, one transaction a batch.

:class:`TransactionCore` loads both the back office and the issuer from the store, runs
each call (a batch of taps, a day close, a recovery run, an issuer operation) against the
in-memory state, then writes every resulting row of both in one transaction.  If anything
fails — the decision, the write, the commit — the in-memory state is thrown away and
reloaded from the store (when next used), so memory never runs ahead of what is durable.  Validators
re-send what was not acknowledged; tap-id dedupe and derived ids make that safe.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import TypeVar

from backoffice.engine import BackOffice, BatchResult
from backoffice.policy import BackOfficeConfig
from backoffice.pricing import Pricer
from backoffice.reports import Figures, Reconciliation, reconcile, store_figures
from backoffice.storage.base import ISSUER_CHANGED_KEY, Store
from backoffice.taps import TapRecord
from issuer.keys import KeyStore
from issuer.policy import BankPolicy
from issuer.service import Issuer

T = TypeVar("T")


class TransactionCore:
    """Back office + issuer + store (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        pricer: Pricer,
        keys: KeyStore,
        policies: Iterable[BankPolicy],
        token_key: bytes,
        config: BackOfficeConfig | None = None,
    ) -> None:
        self.store = store
        self.pricer = pricer
        self.config = config or BackOfficeConfig()
        self._keys = keys
        self._policies = list(policies)
        self._token_key = token_key
        self._issuer: Issuer
        self._core: BackOffice
        self._stale = False
        self._reload()

    def __repr__(self) -> str:
        return f"TransactionCore(store={self.store.url!r})"

    def _reload(self) -> None:
        self._issuer_mark = self.store.meta(ISSUER_CHANGED_KEY)
        self._issuer = Issuer(self._keys, self._policies, self._token_key,
                              self.store.load_issuer_open())
        self._core = BackOffice(self.pricer, self._issuer, self.config, self.store.load())
        self._stale = False

    @property
    def core(self) -> BackOffice:
        """The back office in memory, as of the last commit."""
        if self._stale:
            self._reload()
        return self._core

    @property
    def issuer(self) -> Issuer:
        """The issuer in memory, as of the last commit."""
        if self._stale:
            self._reload()
        return self._issuer

    def refresh(self) -> bool:
        """Reload when another process changed the issuer's records since (a card issued,
        an account activated while the back office runs); True when it did."""
        if self.store.meta(ISSUER_CHANGED_KEY) == self._issuer_mark:
            return False
        self._reload()
        return True

    def run(self, action: Callable[[], T], *, meta: Mapping[str, str] | None = None) -> T:
        """Run ``action`` against memory, then make its effects durable (or undo them);
        ``meta`` rows (settings, simulator state) are written in the same transaction."""
        try:
            result = action()
            changes = self.core.drain_changes()
            if meta:
                changes.meta.update(meta)
            self.store.commit(changes, self.issuer.drain_changes())
        except BaseException:
            # Memory is thrown away and reloaded from the store when next used, not here:
            # a Ctrl-C or SIGTERM ending the process must not wait seconds for a big
            # database to load, and a store that fails now raises this error, not its own.
            self._stale = True
            raise
        return result

    def ingest(
        self, records: Iterable[Mapping[str, object] | TapRecord], now: datetime
    ) -> BatchResult:
        """One batch of tap records, committed as one transaction."""
        return self.run(lambda: self.core.ingest(records, now))

    def close_due(self, now: datetime) -> BatchResult:
        return self.run(lambda: self.core.close_due(now))

    def run_recovery(self, now: datetime) -> BatchResult:
        return self.run(lambda: self.core.run_recovery(now))

    def figures(self) -> Figures:
        return store_figures(self.store, self.config.merchant_id)

    def reconcile(self) -> Reconciliation:
        return reconcile(self.figures())
