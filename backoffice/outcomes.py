"""What a call into the transaction core reports: a :class:`BatchResult` of counts and the
:class:`Outcome` of everything a person may want to see.

Kept apart from :mod:`backoffice.engine` so the service, the consumer, the replay and the
simulator name the results without reaching into the core.  Compiled by mypyc with the
core (setup.py); both still pickle when compiled (tests/test_backoffice_core_times.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Outcome:
    """Something the core did that a person may want to see (no clear PAN, ever)."""

    kind: str  # charged, declined, recovered, written_off, deny_add, deny_remove, rejected, alert
    masked_pan: str
    ref: str
    amount: int = 0
    code: str = ""
    detail: str = ""

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        # Compiled (mypyc), the default pickling of a frozen dataclass sets its fields one by
        # one and is refused; rebuilding through the constructor works either way.
        return Outcome, (self.kind, self.masked_pan, self.ref, self.amount, self.code,
                         self.detail)  # fmt: skip


@dataclass(slots=True)
class BatchResult:
    """Counts and notable outcomes of one call (accepted taps are counted, not listed)."""

    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    events: list[Outcome] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[Outcome]:
        return [e for e in self.events if e.kind == kind]


__all__ = ["BatchResult", "Outcome"]
