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

import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomqtt

from wire.tls import tls_context

PASSWORD_ENV = "TAPSIM_MQTT_PASSWORD"  # noqa: S105 - the variable's name, not a password
CLIENT_PREFIX = "tapsim-backoffice"


class BrokerUrlError(ValueError):
    """A broker URL that cannot be used (says which part, never the password)."""


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls_ca: Path | None = None
    keepalive: int = 30
    timeout: float = 10.0
    use_tls: bool = False  # mqtts://: verified against tls_ca or the system trust store

    @classmethod
    def from_url(cls, url: str, *, tls_ca: Path | None = None,
                 keepalive: int = 30) -> BrokerAddress:
        """``mqtt://[user[:password]@]host[:port]`` or ``mqtts://...``; the password may come
        from $TAPSIM_MQTT_PASSWORD instead (a URL shows up in ``ps``)."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise BrokerUrlError(f"broker URL: scheme must be mqtt:// or mqtts://, got "
                                 f"{parts.scheme or 'none'!r}")
        if not parts.hostname:
            raise BrokerUrlError("broker URL: no host")
        try:
            port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        except ValueError:
            raise BrokerUrlError("broker URL: bad port") from None
        if parts.scheme == "mqtt" and tls_ca is not None:
            raise BrokerUrlError("a CA file was given but the URL is mqtt:// (use mqtts://)")
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else os.environ.get(PASSWORD_ENV)
        return cls(host=parts.hostname, port=port, username=username,
                   password=password if username else None,
                   tls_ca=tls_ca if parts.scheme == "mqtts" else None, keepalive=keepalive,
                   use_tls=parts.scheme == "mqtts")

    @property
    def tls(self) -> bool:
        return self.use_tls or self.tls_ca is not None

    def tls_context(self) -> ssl.SSLContext | None:
        return tls_context(self.tls_ca) if self.tls else None

    def client(self, identifier: str, *, clean_session: bool) -> aiomqtt.Client:
        context = self.tls_context()
        client = aiomqtt.Client(
            self.host, self.port, identifier=identifier, clean_session=clean_session,
            username=self.username, password=self.password, keepalive=self.keepalive,
            timeout=self.timeout, tls_context=context, max_queued_outgoing_messages=0)
        client.pending_calls_threshold = 10_000
        return client


    def url(self) -> str:
        """Where the broker is, for messages (never the password)."""
        scheme = "mqtts" if self.tls else "mqtt"
        return f"{scheme}://{self.host}:{self.port}"

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
