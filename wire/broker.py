"""Mosquitto configuration for the tapsim topic layout: who may do what, listeners, TLS.

Each identity may do only its job, and the broker enforces it through Mosquitto's
**dynamic-security plugin** (shipped in the Debian package), configured from a JSON file
generated here from the same topic names the code uses (:mod:`wire.topics`):

* a validator (broker user = its validator id) may publish only on its own tap topic,
  subscribe to and receive only the downlink topics and its own commit topic, and must
  connect with its own client id (``tapsim-validator-<id>``): no one else can take its
  session, and it cannot take anyone's;
* only the back office (user ``backoffice``) may subscribe to the taps (the shared
  subscription ``$share/backoffice/...``: a plain ACL file cannot deny a SUBSCRIBE, so a
  validator's credentials could join the share and swallow other buses' taps), and only
  it may write the downlink and commit topics;
* everything else is denied: anonymous clients, subscriptions not listed, publishing
  anywhere else.  ``max_packet_size`` bounds every packet (the largest legitimate one is
  a signed deny-list snapshot).

The file holds PBKDF2-SHA512 hashes (the plugin's own format), never a clear password;
the clear passwords go back to the caller, which writes one file per user (mode 0600).
"""

from __future__ import annotations

import base64
import glob
import hashlib
import json
import os
import secrets
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from wire.codec import SIZE_LIMITS
from wire.messages import Signed
from wire.topics import (
    COMMITS_ALL,
    DEAD_LETTER,
    DENY_DELTA,
    DENY_SNAPSHOT,
    FARE_VERSION,
    PREFIX,
    SHARED_TAPS,
    TAPS_ALL,
    check_validator_id,
    commit_topic,
    tap_topic,
    validator_client_id,
)

BACKOFFICE_USER: Final = "backoffice"
PLUGIN_GLOBS: Final = ("/usr/lib/*/mosquitto_dynamic_security.so",
                       "/usr/lib/mosquitto_dynamic_security.so",
                       "/usr/local/lib/mosquitto_dynamic_security.so")
# The largest legitimate packet: a signed deny-list snapshot, plus MQTT headers and topic.
MAX_PACKET: Final = SIZE_LIMITS[Signed] + 4096
_ITERATIONS: Final = 101  # what mosquitto_ctrl uses; the passwords are 192-bit random


class BrokerConfigError(RuntimeError):
    """The broker configuration could not be written (input, plugin, file)."""


@dataclass(frozen=True)
class TlsFiles:
    cafile: Path
    certfile: Path
    keyfile: Path


@dataclass(frozen=True)
class BrokerConfig:
    """What :func:`write_broker_config` wrote: the files and each user's password."""

    conf: Path
    security_file: Path
    port: int
    tls_port: int | None
    credentials: Mapping[str, str] = field(repr=False)  # user -> password (repr hides them)


def find_plugin() -> Path:
    """The dynamic-security plugin of the installed Mosquitto."""
    for pattern in PLUGIN_GLOBS:
        for found in sorted(glob.glob(pattern)):
            return Path(found)
    raise BrokerConfigError("mosquitto_dynamic_security.so not found (Debian package "
                            "'mosquitto' >= 2.0 ships it)")


def _acl(kind: str, topic: str, allow: bool = True) -> dict[str, Any]:
    return {"acltype": kind, "topic": topic, "allow": allow}


def _hashed(password: str) -> dict[str, Any]:
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _ITERATIONS, 64)
    return {"password": base64.b64encode(digest).decode(),
            "salt": base64.b64encode(salt).decode(), "iterations": _ITERATIONS}


def validator_acls(validator_id: str) -> list[dict[str, Any]]:
    """A validator: its own taps up; the downlink and its own commits down; nothing else."""
    acls = [_acl("publishClientSend", tap_topic(validator_id))]
    for topic in (DENY_SNAPSHOT, DENY_DELTA, FARE_VERSION, commit_topic(validator_id)):
        acls += [_acl("subscribeLiteral", topic), _acl("publishClientReceive", topic)]
    return acls


def backoffice_acls() -> list[dict[str, Any]]:
    """The back office: taps in (shared), downlink and commits out, dead letters both ways."""
    acls = [_acl("subscribeLiteral", SHARED_TAPS), _acl("subscribeLiteral", TAPS_ALL),
            _acl("publishClientReceive", TAPS_ALL + "/#"),
            _acl("publishClientReceive", TAPS_ALL)]
    for topic in (DENY_SNAPSHOT, DENY_DELTA, FARE_VERSION, DEAD_LETTER):
        acls += [_acl("publishClientSend", topic), _acl("subscribeLiteral", topic),
                 _acl("publishClientReceive", topic)]
    acls.append(_acl("publishClientSend", COMMITS_ALL))
    return acls


def security_document(credentials: Mapping[str, str]) -> dict[str, Any]:
    """The dynamic-security JSON: one role per identity, deny by default.

    ``credentials`` maps each user (``backoffice`` and the validator ids) to its password.
    """
    clients: list[dict[str, Any]] = []
    roles: list[dict[str, Any]] = []
    for user in sorted(credentials):
        if user == BACKOFFICE_USER:
            role, acls = "backoffice", backoffice_acls()
            client: dict[str, Any] = {"username": user, "textName": "tapsim back office"}
        else:
            role, acls = f"validator-{user}", validator_acls(user)
            client = {"username": user, "textName": f"tapsim validator {user}",
                      "clientid": validator_client_id(user)}
        client.update(_hashed(credentials[user]))
        client["roles"] = [{"rolename": role}]
        clients.append(client)
        roles.append({"rolename": role, "acls": acls})
    return {"clients": clients, "groups": [], "roles": roles,
            "defaultACLAccess": {"publishClientSend": False, "publishClientReceive": False,
                                 "subscribe": False, "unsubscribe": True}}


def mosquitto_conf(*, port: int, data_dir: Path, security_file: Path | None,
                   plugin: Path | None = None, tls: TlsFiles | None = None,
                   tls_port: int | None = None, bind: str = "127.0.0.1",
                   log_file: Path | None = None, max_queued_messages: int = 100_000,
                   plain_listener: bool = True, run_as: str | None = None) -> str:
    """A mosquitto 2.x configuration (``security_file`` None: an anonymous test broker).

    ``run_as``: mosquitto started as root drops to the ``mosquitto`` user, which cannot
    read files of mode 0600 owned by someone else; name the owner here.

    The log goes to stderr as well as to ``log_file``, so a broker that cannot bind its
    port says so where it was started.  Persistence is on and saved every second; the
    end-to-end commit acknowledgements (wire/README.md) make a broker crash lose nothing.
    """
    if tls is not None and tls_port is None:
        raise BrokerConfigError("a TLS listener needs tls_port")
    lines = [
        "# Generated by tapsim (wire.broker).",
        "per_listener_settings false",
        f"allow_anonymous {'false' if security_file else 'true'}",
        "persistence true",
        f"persistence_location {data_dir}/",
        "autosave_interval 1",
        f"max_queued_messages {max_queued_messages}",
        "max_inflight_messages 1000",
        f"max_packet_size {MAX_PACKET}",
        "set_tcp_nodelay true",
        "log_dest stderr",
    ]
    if log_file:
        lines.append(f"log_dest file {log_file}")
    lines += ["log_type error", "log_type warning", "log_type notice",
              "connection_messages true"]
    if run_as is not None:
        lines.append(f"user {run_as}")
    if security_file is not None:
        lines += [f"plugin {plugin or find_plugin()}",
                  f"plugin_opt_config_file {security_file}"]
    if plain_listener:
        lines += ["", f"listener {port} {bind}"]
    if tls is not None:
        lines += [
            "", f"listener {tls_port} {bind}",
            f"cafile {tls.cafile}", f"certfile {tls.certfile}", f"keyfile {tls.keyfile}",
            "tls_version tlsv1.2",
        ]
    return "\n".join(lines) + "\n"


def generate_password() -> str:
    return secrets.token_urlsafe(24)


def check_port(port: int, what: str = "--port") -> int:
    if not 1 <= port <= 65535:
        raise BrokerConfigError(f"{what} {port}: a TCP port is 1-65535")
    return port


def check_port_free(bind: str, port: int, what: str = "--port") -> None:
    """BrokerConfigError naming the port when something already listens on it."""
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((bind, port))
        except OSError as exc:
            raise BrokerConfigError(
                f"{what} {port}: {bind}:{port} is in use ({exc.strerror}); another broker "
                f"(the system's mosquitto?) listens there: choose a free port") from None


def write_secret(path: Path, data: bytes) -> None:
    """Write ``data`` to a file only its owner can read."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def write_broker_config(out_dir: Path, validator_ids: Iterable[str], *, port: int,
                        tls: TlsFiles | None = None, tls_port: int | None = None,
                        bind: str = "127.0.0.1", plain_listener: bool = True,
                        passwords: Mapping[str, str] | None = None,
                        run_as: str | None = None) -> BrokerConfig:
    """Write mosquitto.conf, dynamic-security.json and a data directory under ``out_dir``.

    Every user gets a fresh random password unless ``passwords`` names one; the caller
    hands each validator its own (see :class:`BrokerConfig` ``credentials``).
    """
    ids = sorted(set(validator_ids))
    for vid in ids:
        check_validator_id(vid)
        if vid == BACKOFFICE_USER:
            raise BrokerConfigError(f"validator id {vid!r} clashes with the back-office user")
    check_port(port)
    if tls_port is not None:
        check_port(tls_port, "--tls-port")
    plugin = find_plugin()
    out_dir.mkdir(parents=True, exist_ok=True)
    data = out_dir / "data"
    data.mkdir(exist_ok=True)
    users = {user: (passwords or {}).get(user) or generate_password()
             for user in (BACKOFFICE_USER, *ids)}
    security, conf = out_dir / "dynamic-security.json", out_dir / "mosquitto.conf"
    write_secret(security, json.dumps(security_document(users), indent=1).encode())
    conf.write_text(mosquitto_conf(port=port, data_dir=data, security_file=security,
                                   plugin=plugin, tls=tls, tls_port=tls_port, bind=bind,
                                   log_file=out_dir / "mosquitto.log",
                                   plain_listener=plain_listener, run_as=run_as))
    return BrokerConfig(conf=conf, security_file=security, port=port, tls_port=tls_port,
                        credentials=users)


__all__ = [
    "BACKOFFICE_USER", "MAX_PACKET", "PREFIX", "BrokerConfig", "BrokerConfigError", "TlsFiles",
    "backoffice_acls", "check_port", "check_port_free", "find_plugin", "generate_password",
    "mosquitto_conf", "security_document", "validator_acls", "validator_client_id",
    "write_broker_config", "write_secret",
]
