"""The imperative shell: the core, the in-process issuer and a store, one transaction a batch.

:class:`TransactionCore` loads both the back office and the issuer from the store, runs
each call (a batch of taps, a day close, a recovery run, an issuer operation) against the
in-memory state, then writes every resulting row of both in one transaction.  If anything
fails — the decision, the write, the commit — the in-memory state is thrown away and
reloaded from the store (when next used), so memory never runs ahead of what is durable.  Validators
re-send what was not acknowledged; tap-id dedupe and derived ids make that safe.

Branch operations (``tapsim account``, ``tapsim card issue``/``load``) change the issuer's rows
while the core runs.  The core remembers the issuer's change mark as of its load, and every
commit checks it under the issuer lock the branch also takes: when it moved, the commit is
rolled back (:class:`~backoffice.storage.base.IssuerConflictError`), and the call is done
again on a fresh load, this time holding the lock from the reload to the commit, so it goes
through.  A branch change is never overwritten with the core's stale copy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import date, datetime
from typing import TypeVar

from backoffice.engine import BackOffice
from backoffice.idle import adopt
from backoffice.outcomes import BatchResult
from backoffice.policy import BackOfficeConfig
from backoffice.ports import IssuerGateway
from backoffice.pricing import Pricer
from backoffice.records import Changes
from backoffice.reports import Figures, Reconciliation, reconcile, store_figures
from backoffice.storage.base import IssuerConflictError, Store
from backoffice.taps import TapRecord
from fare.engine import cycles_not_collected
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
        self._bank_day: date | None = None  # the service day the bank's day job last ran
        self.redone = 0  # calls done again after a branch changed the issuer under them
        self._reload()

    def __repr__(self) -> str:
        return f"TransactionCore(store={self.store.url!r})"

    def _reload(self) -> None:
        self._issuer_mark = self.store.issuer_mark()
        self._issuer = Issuer(self._keys, self._policies, self._token_key,
                              self.store.load_issuer_open())
        issuer: IssuerGateway = self._issuer if self.gateway is None else self.gateway
        # Cards idle past the floor stay in the database until they tap again (_adopt_cards).
        self._core = BackOffice(self.pricer, issuer, self.config,
                                self.store.load(idle_cards=False), evict_idle=True)
        self._stale = False

    def _reload_issuer(self) -> None:
        self._issuer_mark = self.store.issuer_mark()
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
        elif self.gateway is not None and self.store.issuer_mark() != self._issuer_mark:
            self._reload_issuer()  # the bank's host wrote its rows: the core is unaffected
        return self._issuer

    def refresh(self) -> bool:
        """Reload when another process changed the issuer's records since (a card issued,
        an account activated while the back office runs); True when it did."""
        if self.store.issuer_mark() == self._issuer_mark:
            return False
        if self.gateway is not None:
            return False  # the core does not use it; ``issuer`` reloads when next read
        self._reload()
        return True

    def run(self, action: Callable[[], T], *, meta: Mapping[str, str] | None = None) -> T:
        """Run ``action`` against memory, then make its effects durable (or undo them);
        ``meta`` rows (settings, simulator state) are written in the same transaction.

        ``action`` may run twice: when a branch changed the issuer's records between the
        load and the commit, it runs again on a fresh load (so it must do nothing outside
        the core and the issuer but return its result).

        The cyclic garbage collector is paused for each attempt and what it leaves is moved
        to the oldest generation unwalked (:func:`fare.engine.cycles_not_collected`, as the
        fare engine's own batches do): the core's records form no reference cycles
        (tests/test_backoffice_gc.py), and left on, the collector walked the growing working
        state again and again (issue 15; benchmarks/test_bench_core.py times batches the same
        way)."""
        try:
            return self._attempt(action, meta)
        except IssuerConflictError:
            self.redone += 1
        # Again, holding the issuer lock from the reload to the commit: no branch write can
        # come between this time (a branch operation waits for the commit, then sees it).
        try:
            with self.store.issuer_held():
                self._reload()
                return self._attempt(action, meta)
        except BaseException:
            self._stale = True
            raise

    def _attempt(self, action: Callable[[], T], meta: Mapping[str, str] | None) -> T:
        try:
            with cycles_not_collected():
                result = action()
                changes = self.core.drain_changes()
                if meta:
                    changes.meta.update(meta)
                if self.gateway is None:
                    self.store.commit(changes, self.issuer.drain_changes(),
                                      issuer_mark=self._issuer_mark)
                else:
                    self._commit_with_gateway(changes)
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
        batch = list(records)  # read again if the batch is redone

        def ingest() -> BatchResult:
            self.adopt_cards(batch)
            return self.core.ingest(batch, now)

        return self.run(ingest)

    def adopt_cards(self, batch: Iterable[Mapping[str, object] | TapRecord]) -> None:
        """Read back the cards of the batch's taps the core does not hold (evicted when idle,
        backoffice.idle): one query for them all; a new card is a look-up that finds nothing.
        Whoever gives ``core.ingest`` a batch inside ``run`` calls this first (``ingest`` does)."""
        core = self.core
        cards = core.cards
        wanted: set[str] = set()
        for raw in batch:
            token = raw.pan_token if isinstance(raw, TapRecord) else raw.get("pan_token")
            if isinstance(token, str) and token not in cards:
                wanted.add(token)
        if wanted:
            adopt(core, self.store.load_cards(sorted(wanted)))

    def close_due(self, now: datetime) -> BatchResult:
        """The core's closes due at ``now``; once a service day, with them, the in-process
        bank's day job: old accounts of cards replaced at another bank close after their
        grace period (issuer/README.md).  Once a day, not every tick: it visits every card.
        Not with a bank over the wire (``gateway``): that bank runs its own day."""
        day = self.config.aggregation.service_day.day_of(now)
        if day == self._bank_day or self.gateway is not None:  # a bank over the wire: its own
            return self.run(lambda: self.core.close_due(now))

        def day_close() -> BatchResult:
            self.issuer.close_after_grace(now)
            return self.core.close_due(now)

        result = self.run(day_close)
        self._bank_day = day
        return result

    def run_recovery(self, now: datetime) -> BatchResult:
        return self.run(lambda: self.core.run_recovery(now))

    def _commit_with_gateway(self, changes: Changes) -> None:
        """The core decided on the bank's answers over the wire: those are made durable first
        (the gateway's flush), then the batch.  The in-process issuer changes only when an
        action read it (a branch operation): its changes are drained from it, never reloaded
        here, and checked against the mark like the core's own in-process commits are."""
        issuer_changes = self._issuer.drain_changes()
        flush: Callable[[], None] | None = getattr(self.gateway, "flush", None)
        if flush is not None:
            flush()  # the bank's answers this batch decided on, durable before it
        # The core's decisions do not rest on the in-process issuer here: only a batch that
        # also wrote the issuer's rows needs the mark's check.
        self.store.commit(changes, issuer_changes,
                          issuer_mark=self._issuer_mark if issuer_changes else None)
        if issuer_changes:
            # A branch operation on the bank's rows: marked, so the bank's host reloads.
            self._issuer_mark = self.store.save_issuer(IssuerChanges())

    def figures(self) -> Figures:
        figures = store_figures(self.store, self.config.merchant_id)
        captured: Callable[[], int] | None = getattr(self.gateway, "bank_captured", None)
        if captured is not None:  # the bank over the wire: what it said it captured
            figures = replace(figures, issuer_captured=captured())
        return figures

    def reconcile(self) -> Reconciliation:
        return reconcile(self.figures())
