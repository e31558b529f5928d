"""Authorization response codes (ISO 8583 field 39 style).

Each card state that stops a payment answers with its own code, so a back office (and a
person reading its logs) can tell *why* a card was declined without asking the bank.
The table with the reasons is in ``issuer/README.md``; keep the two in step.
"""

from __future__ import annotations

from enum import StrEnum


class ResponseCode(StrEnum):
    """Two-character response code; the value is what goes on the wire and into the ARPC."""

    APPROVED = "00"
    PICK_UP_REPLACED = "04"  # the card was replaced by a new one: it is no longer valid
    INVALID_TRANSACTION = "12"  # malformed request, wrong currency, bad reference
    INVALID_AMOUNT = "13"
    INVALID_CARD = "14"  # no such card at this issuer
    LOST_CARD = "41"
    CLOSED_ACCOUNT = "46"  # card cancelled (注销) / account closed
    INSUFFICIENT_FUNDS = "51"
    EXPIRED_CARD = "54"  # past expiry and the bank stops the financial function
    NOT_PERMITTED = "57"  # dormant account: non-counter business suspended
    SUSPECTED_FRAUD = "59"  # ATC seen before: a replayed cryptogram
    RESTRICTED_CARD = "62"  # social security status sealed (封存)
    SECURITY_VIOLATION = "63"  # ARQC does not verify: forged or corrupted cryptogram
    NOT_ACTIVATED = "78"  # financial function never activated at a branch
    ISSUER_UNAVAILABLE = "91"  # never the issuer's: the acquirer stood in (bank unreachable)
    SYSTEM_MALFUNCTION = "96"  # the issuer cannot find the card's key

    @property
    def approved(self) -> bool:
        return self is ResponseCode.APPROVED

    @property
    def arc(self) -> bytes:
        """The 2-byte authorisation response code the ARPC is computed over."""
        return self.value.encode("ascii")


DESCRIPTIONS: dict[ResponseCode, str] = {
    ResponseCode.APPROVED: "approved",
    ResponseCode.PICK_UP_REPLACED: "card replaced by a new card",
    ResponseCode.INVALID_TRANSACTION: "invalid transaction",
    ResponseCode.INVALID_AMOUNT: "invalid amount",
    ResponseCode.INVALID_CARD: "invalid card (unknown to the issuer)",
    ResponseCode.LOST_CARD: "lost card",
    ResponseCode.CLOSED_ACCOUNT: "card cancelled, account closed",
    ResponseCode.INSUFFICIENT_FUNDS: "insufficient funds",
    ResponseCode.EXPIRED_CARD: "expired card",
    ResponseCode.NOT_PERMITTED: "transaction not permitted to cardholder (dormant account)",
    ResponseCode.SUSPECTED_FRAUD: "suspected fraud: cryptogram replayed (ATC seen before)",
    ResponseCode.RESTRICTED_CARD: "restricted card (social security status sealed)",
    ResponseCode.SECURITY_VIOLATION: "security violation: cryptogram does not verify",
    ResponseCode.NOT_ACTIVATED: "financial function not activated",
    ResponseCode.ISSUER_UNAVAILABLE: "issuer unavailable: the acquirer stood in",
    ResponseCode.SYSTEM_MALFUNCTION: "system malfunction (card key unavailable)",
}
