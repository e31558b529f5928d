"""The imperative shell: the core, the in-process issuer and a store, one transaction a batch.

:class:`TransactionCore` loads both the back office and the issuer from the store, runs
each call (a batch of taps, a day close, a recovery run, an issuer operation) against the
in-memory state, then writes every resulting row of both in one transaction.  If anything
fails — the decision, the write, the commit — the in-memory state is thrown away and
reloaded from the store (when next used), so memory never runs ahead of what is durable.  Validators
re-send what was not acknowledged; tap-id dedupe and derived ids make that safe.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import TypeVar

from backoffice.engine import BackOffice, BatchResult
from backoffice.policy import BackOfficeConfig
from backoffice.ports import IssuerGateway
from backoffice.pricing import Pricer
from backoffice.reports import Figures, Reconciliation, reconcile, store_figures
from backoffice.storage.base import ISSUER_CHANGED_KEY, Store
from backoffice.taps import TapRecord
from issuer.keys import KeyStore
from issuer.policy import BankPolicy
from issuer.service import Issuer
from issuer.store import IssuerChanges

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
        gateway: IssuerGateway | None = None,
    ) -> None:
        self.store = store
        # The bank over the wire (backoffice.acquirer), or None: the issuer in process. With
        # a gateway the in-process issuer serves only branch operations (card issue, deposits)
        # on the issuer's rows, and is reloaded when the bank's host wrote them.
        self.gateway = gateway
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
                              self.store.load_issuer())
        issuer: IssuerGateway = self._issuer if self.gateway is None else self.gateway
        self._core = BackOffice(self.pricer, issuer, self.config, self.store.load())
        self._stale = False

    def _reload_issuer(self) -> None:
        self._issuer_mark = self.store.meta(ISSUER_CHANGED_KEY)
        self._issuer = Issuer(self._keys, self._policies, self._token_key,
                              self.store.load_issuer())

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
        elif self.gateway is not None and self.store.meta(ISSUER_CHANGED_KEY) != \
                self._issuer_mark:
            self._reload_issuer()  # the bank's host wrote its rows: the core is unaffected
        return self._issuer

    def refresh(self) -> bool:
        """Reload when another process changed the issuer's records since (a card issued,
        an account activated while the back office runs); True when it did."""
        if self.store.meta(ISSUER_CHANGED_KEY) == self._issuer_mark:
            return False
        if self.gateway is not None:
            return False  # the core does not use it; ``issuer`` reloads when next read
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
            # With a gateway, the issuer in memory changes only when an action read it
            # (a branch operation): its changes are drained from it, never reloaded here.
            issuer = self._issuer if self.gateway is not None else self.issuer
            issuer_changes = issuer.drain_changes()
            flush: Callable[[], None] | None = getattr(self.gateway, "flush", None)
            if flush is not None:
                flush()  # the bank's answers this batch decided on, durable before it
            self.store.commit(changes, issuer_changes)
            if self.gateway is not None and issuer_changes:
                # A branch operation on the bank's rows: marked, so the bank's host reloads.
                self.store.save_issuer(IssuerChanges())
                self._issuer_mark = self.store.meta(ISSUER_CHANGED_KEY)
        except BaseException:
            # Memory is thrown away and reloaded from the store when next used, not here:
            # a Ctrl-C or SIGTERM ending the process must not wait seconds for a big
            # database to load, and a store that fails now raises this error, not its own.
            self._stale = True
            flush = getattr(self.gateway, "flush", None)
            if flush is not None:  # the bank's answers are facts, batch or not: kept if we can
                with contextlib.suppress(Exception):
                    flush()
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
        figures = store_figures(self.store, self.config.merchant_id)
        captured: Callable[[], int] | None = getattr(self.gateway, "bank_captured", None)
        if captured is not None:  # the bank over the wire: what it said it captured
            figures = replace(figures, issuer_captured=captured())
        return figures

    def reconcile(self) -> Reconciliation:
        return reconcile(self.figures())
