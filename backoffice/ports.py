"""The one interface through which the back office reaches the card's bank.

:class:`issuer.service.Issuer` satisfies it in process; a network client to a real
acquirer host would be another implementation.  Every call carries an idempotency key
(request id, capture id) so asking again after a crash is safe.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from issuer.models import AuthorizationRequest, AuthResponse, Capture, Hold


class IssuerGateway(Protocol):
    def authorize(self, request: AuthorizationRequest, now: datetime) -> AuthResponse: ...

    def capture(self, hold_id: str, amount: int, capture_id: str, now: datetime) -> Capture: ...

    def release(self, hold_id: str, now: datetime) -> Hold: ...
