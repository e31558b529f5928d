"""Typed errors of the issuer.  None of them ever carries a clear PAN or a key."""

from __future__ import annotations


class IssuerError(Exception):
    """Base of every error the issuer raises."""


class UnknownAccountError(IssuerError, KeyError):
    """An operation named an account the issuer does not hold."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "unknown account"


class UnknownCardError(IssuerError, KeyError):
    """An operation named a card (by masked PAN / token) the issuer does not hold."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown card"


class IllegalTransitionError(IssuerError):
    """A lifecycle event that the card's current state does not allow."""

    def __init__(self, card: str, state: str, event: str, why: str = "") -> None:
        self.card = card
        self.state = state
        self.event = event
        detail = f": {why}" if why else ""
        super().__init__(f"card {card}: cannot {event} a card that is {state}{detail}")


class AccountError(IssuerError):
    """An account operation that the account's state or balance does not allow."""


class HoldError(IssuerError):
    """Capture or release of a hold that is unknown, already settled, or too small."""


class KeyStoreError(IssuerError):
    """A key that is missing, of the wrong size, or does not unwrap (names no key material)."""


class DuplicateError(IssuerError):
    """An account or card id that is already taken."""
