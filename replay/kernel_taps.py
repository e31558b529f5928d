"""A tap record from the kernel's transaction record: what a validator sends the back office.

The kernel's :class:`~emv.kernel.TapResult` holds the token and mask (never the PAN), the ATC,
the cryptogram, the IAD (with the CVR and the cryptogram algorithm), the AIP and the terminal
data the cryptogram covers, so the record carries the exact AC input the issuer recomputes
(``emv.appdata.ac_input``: terminal data || AIP || ATC || CVR).
"""

from __future__ import annotations

from datetime import datetime

from backoffice.taps import Action, MalformedTapError, TapRecord
from emv.appdata import (
    ALGORITHM_SM4,
    AppDataError,
    IssuerApplicationData,
    ac_input,
    ac_terminal_data,
)
from emv.kernel import Outcome, TapResult

ACCEPTED = (Outcome.ONLINE_REQUEST, Outcome.APPROVED_OFFLINE)


def tap_record(
    result: TapResult,
    *,
    tap_id: str,
    time: datetime,
    validator_id: str,
    operator_id: str,
    stop_id: str,
    route_id: str,
    action: Action,
    rider_category: str = "",
    fare_media: str = "",
) -> TapRecord:
    """The record of an accepted tap; MalformedTapError (field ``kernel``) if the kernel did
    not accept the card or its record lacks part of the cryptogram data."""

    def need(value: str | int | None, what: str) -> str | int:
        if value is None:
            raise MalformedTapError("kernel", f"the tap result has no {what}", tap_id)
        return value

    if result.outcome not in ACCEPTED:
        reason = f": {result.reason}" if result.reason else ""
        raise MalformedTapError("kernel", f"card not accepted ({result.outcome.value}{reason})",
                                tap_id)  # fmt: skip
    atc = int(need(result.atc, "ATC"))
    try:
        iad = IssuerApplicationData.parse(bytes.fromhex(str(need(result.iad, "IAD"))))
        values = {int(tag, 16): bytes.fromhex(v) for tag, v in result.ac_data.items()}
        data = ac_input(ac_terminal_data(values), bytes.fromhex(str(need(result.aip, "AIP"))),
                        atc, iad.cvr)  # fmt: skip
        arqc = bytes.fromhex(str(need(result.cryptogram, "cryptogram")))
    except (AppDataError, ValueError) as exc:
        if isinstance(exc, MalformedTapError):
            raise
        raise MalformedTapError("kernel", f"cryptogram data unusable: {exc}", tap_id) from None
    return TapRecord(
        tap_id=tap_id,
        validator_id=validator_id,
        operator_id=operator_id,
        pan_token=str(need(result.pan_token, "PAN token")),
        masked_pan=str(need(result.pan_masked, "masked PAN")),
        time=time,
        stop_id=stop_id,
        route_id=route_id,
        action=action,
        atc=atc,
        arqc=arqc,
        ac_data=data,
        scheme="sm4" if iad.algorithm == ALGORITHM_SM4 else "tdes",
        rider_category=rider_category,
        fare_media=fare_media,
    )
