"""The MQTT topic layout of tapsim v1, and the checks a receiver makes on a topic.

``tapsim/v1/taps/<validator id>``  validator -> back office, QoS 1 (one topic per validator
                                   so the broker's ACL can pin each validator to its own)
``tapsim/v1/denylist/snapshot``    back office -> validators, QoS 1, retained, signed
``tapsim/v1/denylist/delta``       back office -> validators, QoS 1, signed
``tapsim/v1/fares/version``        back office -> validators, QoS 1, retained, signed
``tapsim/v1/deadletter``           back office: payloads it refused, with the reason
``tapsim/v1/commits/<validator id>`` back office -> that validator, QoS 1: the tap ids
                                   committed to the ledger (end-to-end acknowledgement)
"""

from __future__ import annotations

import re
from typing import Any, Final

from wire.errors import Reason, WireError
from wire.messages import (
    VALIDATOR_ID_PATTERN,
    DenyListDelta,
    DenyListSnapshot,
    FareTableVersion,
)

PREFIX: Final = "tapsim/v1"
TAPS_PREFIX: Final = f"{PREFIX}/taps/"
TAPS_ALL: Final = f"{PREFIX}/taps/+"
SHARED_TAPS: Final = f"$share/backoffice/{TAPS_ALL}"  # several back-office workers share
DENY_SNAPSHOT: Final = f"{PREFIX}/denylist/snapshot"
DENY_DELTA: Final = f"{PREFIX}/denylist/delta"
FARE_VERSION: Final = f"{PREFIX}/fares/version"
DEAD_LETTER: Final = f"{PREFIX}/deadletter"
COMMITS_PREFIX: Final = f"{PREFIX}/commits/"
COMMITS_ALL: Final = f"{PREFIX}/commits/+"

DOWNLINK: Final[dict[str, type[Any]]] = {
    DENY_SNAPSHOT: DenyListSnapshot,
    DENY_DELTA: DenyListDelta,
    FARE_VERSION: FareTableVersion,
}
_VALIDATOR_ID = re.compile(VALIDATOR_ID_PATTERN)


def check_validator_id(validator_id: str) -> str:
    """``validator_id`` if it can name a topic level (and a broker user), else WireError."""
    if not _VALIDATOR_ID.match(validator_id):
        raise WireError(Reason.INVALID, f"validator id {validator_id!r}: 1-32 of A-Z a-z 0-9 . _ -"
                                        ", starting with a letter or digit")
    return validator_id


def tap_topic(validator_id: str) -> str:
    return TAPS_PREFIX + check_validator_id(validator_id)


def validator_client_id(validator_id: str) -> str:
    """The one MQTT client id the broker lets validator ``validator_id`` connect with."""
    return f"tapsim-validator-{check_validator_id(validator_id)}"


def commit_topic(validator_id: str) -> str:
    """Where the back office tells ``validator_id`` which of its taps are committed."""
    return COMMITS_PREFIX + check_validator_id(validator_id)


def validator_of(topic: str) -> str:
    """The validator a tap topic belongs to; WRONG_TOPIC for anything else."""
    if not topic.startswith(TAPS_PREFIX):
        raise WireError(Reason.WRONG_TOPIC, f"{topic!r} is not under {TAPS_PREFIX}")
    vid = topic[len(TAPS_PREFIX):]
    if not _VALIDATOR_ID.match(vid):
        raise WireError(Reason.WRONG_TOPIC, f"{topic!r}: not a validator id after {TAPS_PREFIX}")
    return vid


def downlink_type(topic: str) -> type[Any]:
    """The message type a downlink topic carries; WRONG_TOPIC for any other topic."""
    try:
        return DOWNLINK[topic]
    except KeyError:
        raise WireError(Reason.WRONG_TOPIC, f"{topic!r} is not a downlink topic") from None
