"""TLS for the MQTT link: ``mqtts://`` always means TLS, verified, never plain text.

The context verifies the broker's certificate chain against ``--ca`` when one is given and
against the system trust store otherwise, and checks the host name (``ssl`` defaults,
TLS 1.2 at least).  :func:`check_broker` makes one handshake at start, so a certificate
that is not trusted or names another host is an error naming the broker before any
password is sent, while a broker that is merely down is not (validators run offline).
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path


class TlsError(RuntimeError):
    """The broker's TLS cannot be trusted (names the broker and why)."""


def tls_context(ca: Path | None) -> ssl.SSLContext:
    """A client context: ``ca`` or the system's trust store, host name checked."""
    try:
        context = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"--ca {ca}: not a CA certificate file ({exc})") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def check_broker(host: str, port: int, context: ssl.SSLContext, timeout: float = 5.0) -> bool:
    """One TLS handshake with the broker: True when it verified, False when the broker
    cannot be reached (it may come later); TlsError when its certificate is not trusted,
    names another host, or it does not speak TLS."""
    where = f"broker mqtts://{host}:{port}"
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return False
    try:
        with context.wrap_socket(raw, server_hostname=host):
            return True
    except ssl.SSLCertVerificationError as exc:
        raise TlsError(f"{where}: certificate not accepted: {exc.verify_message}") from None
    except ssl.SSLError as exc:
        raise TlsError(f"{where}: no TLS handshake ({exc.reason or exc}); is it a plain "
                       "mqtt:// port?") from None
    except OSError as exc:  # connected, then dropped mid-handshake: not a TLS listener
        raise TlsError(f"{where}: no TLS handshake ({exc.strerror or exc}); is it a plain "
                       "mqtt:// port?") from None
    finally:
        raw.close()
