"""Where the broker is: one reading of a broker URL for validators and the back office.

``mqtt://[user[:password]@]host[:port]`` (port 1883) or ``mqtts://...`` (TLS, port 8883,
verified against ``--ca`` or the system trust store: :mod:`wire.tls`).  The password may come
from $TAPSIM_MQTT_PASSWORD instead of the URL (a URL shows up in ``ps`` and shell history),
and no error names the URL, which may hold it.  ``terminal.uplink.BrokerSettings`` and
``backoffice.consumer.link.BrokerAddress`` are this plus what each side connects with.
"""

from __future__ import annotations

import dataclasses
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from wire.tls import tls_context

PASSWORD_ENV = "TAPSIM_MQTT_PASSWORD"  # noqa: S105 - the variable's name, not a password


class BrokerUrlError(ValueError):
    """A broker URL that cannot be used (says which part, never the password)."""


@dataclass(frozen=True)
class BrokerUrl:
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls_ca: Path | None = None
    keepalive: int = 30
    timeout: float = 10.0
    use_tls: bool = False  # mqtts://: verified against tls_ca or the system trust store

    @classmethod
    def parse(cls, url: str, *, tls_ca: Path | None = None) -> BrokerUrl:
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
        return BrokerUrl(host=parts.hostname, port=port, username=username,
                         password=password if username else None,
                         tls_ca=tls_ca if parts.scheme == "mqtts" else None,
                         use_tls=parts.scheme == "mqtts")

    def fields(self) -> dict[str, Any]:
        """The fields, for a subclass built from a parsed URL."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(BrokerUrl)}

    @property
    def tls(self) -> bool:
        return self.use_tls or self.tls_ca is not None

    def tls_context(self) -> ssl.SSLContext | None:
        return tls_context(self.tls_ca) if self.tls else None

    def url(self) -> str:
        """Where the broker is, for messages (never the password)."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"
