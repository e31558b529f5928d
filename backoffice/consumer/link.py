"""The back office's MQTT connections (aiomqtt): where the broker is, and manual acks.

A tap is acknowledged to the broker only after the batch holding it is committed.  paho-mqtt
(>= 2.0) can hold back the PUBACK of a received QoS 1 message (``manual_ack``) until the
application calls ``ack(mid, qos)``; aiomqtt 2.5 does not expose it yet (aiomqtt issue #345,
its pull request #346), so :func:`manual_acks` turns it on through aiomqtt's paho client
*before* connecting (a persistent session delivers its queued messages right after CONNACK,
and each one would otherwise be acknowledged on arrival), and :meth:`Link.ack` sends the
PUBACK on the connection the message came on.  After a reconnect the broker re-sends
whatever was not acknowledged; the core's dedupe on ``tap_id`` absorbs the second copy, so
at-least-once delivery never charges twice, and no tap is lost in a back-office crash.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt

from wire.brokerurl import PASSWORD_ENV, BrokerUrl, BrokerUrlError

CLIENT_PREFIX = "tapsim-backoffice"


@dataclass(frozen=True)
class BrokerAddress(BrokerUrl):
    """The broker, as the back office's workers connect to it."""

    @classmethod
    def from_url(cls, url: str, *, tls_ca: Path | None = None,
                 keepalive: int = 30) -> BrokerAddress:
        """A parsed broker URL (wire.brokerurl: forms, password from $TAPSIM_MQTT_PASSWORD)."""
        return cls(**{**BrokerUrl.parse(url, tls_ca=tls_ca).fields(), "keepalive": keepalive})

    def client(self, identifier: str, *, clean_session: bool) -> aiomqtt.Client:
        context = self.tls_context()
        client = aiomqtt.Client(
            self.host, self.port, identifier=identifier, clean_session=clean_session,
            username=self.username, password=self.password, keepalive=self.keepalive,
            timeout=self.timeout, tls_context=context, max_queued_outgoing_messages=0)
        client.pending_calls_threshold = 10_000
        return client


    async def accepts_anonymous(self) -> bool:
        """True when the broker lets a client in without credentials.

        The tapsim broker never does (``tapsim broker config``), so such a broker is
        another one, e.g. the system's Mosquitto on a port the tapsim broker could not
        take.  A broker that cannot be reached at all is False: the back office keeps
        trying to connect, as it does after any outage.
        """
        context = self.tls_context()
        probe = aiomqtt.Client(self.host, self.port, clean_session=True, timeout=self.timeout,
                               tls_context=context)
        try:
            async with probe:
                return True
        except aiomqtt.MqttError:
            return False


def worker_id(n: int) -> str:
    """The persistent-session client id of tap worker ``n`` (1, 2, ...)."""
    return f"{CLIENT_PREFIX}-{n}"


def publisher_id() -> str:
    return f"{CLIENT_PREFIX}-pub"


def manual_acks(client: aiomqtt.Client) -> aiomqtt.Client:
    """PUBACKs only when :meth:`Link.ack` says so (see the module docstring)."""
    paho: Any = getattr(client, "_client", None)
    if paho is None or not hasattr(paho, "manual_ack_set") or not hasattr(paho, "ack"):
        raise RuntimeError("this aiomqtt/paho-mqtt cannot hold back acknowledgements "
                           "(needs paho-mqtt >= 2.0)")
    paho.manual_ack_set(True)
    return client


class Link:
    """One connection's acknowledgements: valid only while that connection is up."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.up = True

    def ack(self, mid: int, qos: int) -> bool:
        """PUBACK ``mid`` on this connection; False (and nothing sent) once it is gone: the
        broker will send the message again on the next connection."""
        if qos == 0:
            return True  # nothing is owed for QoS 0
        if not self.up:
            return False
        paho: Any = self.client._client  # aiomqtt keeps paho here; see manual_acks
        paho.ack(mid, qos)
        return True


__all__ = [
    "CLIENT_PREFIX", "PASSWORD_ENV", "BrokerAddress", "BrokerUrlError", "Link", "manual_acks",
    "publisher_id", "worker_id",
]
