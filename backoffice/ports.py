"""The one interface through which the back office reaches the card's bank.

:class:`issuer.service.Issuer` satisfies it in process; a network client to a real
acquirer host would be another implementation.  Every call carries an idempotency key
(request id, capture id) so asking again after a crash is safe.

An implementation that keeps the bank's records in this process may also offer ``prune``
(:class:`PrunableGateway`): the core calls it when its late-arrival floor moves
(:func:`backoffice.horizon.advance_floor`), so memory holds what a restart would load for
that floor, not the history.  One without it (the network client) is left alone.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from issuer.models import AuthorizationRequest, AuthResponse, Capture, Hold


class IssuerGateway(Protocol):
    def authorize(self, request: AuthorizationRequest, now: datetime) -> AuthResponse: ...

    def capture(self, hold_id: str, amount: int, capture_id: str, now: datetime) -> Capture: ...

    def release(self, hold_id: str, now: datetime) -> Hold: ...


class PrunableGateway(IssuerGateway, Protocol):
    def prune(self, floor: datetime) -> int:
        """Forget in memory what a load for ``floor`` would not read; how many records."""
        ...
