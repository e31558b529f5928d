"""wire.broker / wire.testca: the generated dynamic-security rules, config and passwords."""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.services import find_binary, missing
from wire import WireError
from wire.broker import (
    MAX_PACKET,
    BrokerConfigError,
    TlsFiles,
    find_plugin,
    mosquitto_conf,
    security_document,
    write_broker_config,
)
from wire.testca import make_test_ca


def _roles(doc: dict[str, Any]) -> dict[str, list[tuple[str, str, bool]]]:
    return {r["rolename"]: [(a["acltype"], a["topic"], a["allow"]) for a in r["acls"]]
            for r in doc["roles"]}


def test_each_validator_may_only_send_its_own_taps_and_read_its_downlink() -> None:
    doc = security_document({"V1": "p1", "V2": "p2", "backoffice": "p3"})
    v1 = _roles(doc)["validator-V1"]
    sends = [t for kind, t, allow in v1 if kind == "publishClientSend" and allow]
    subs = {t for kind, t, allow in v1 if kind.startswith("subscribe") and allow}
    assert sends == ["tapsim/v1/taps/V1"]
    assert subs == {"tapsim/v1/denylist/snapshot", "tapsim/v1/denylist/delta",
                    "tapsim/v1/fares/version", "tapsim/v1/commits/V1"}
    # Deny by default: nothing not listed, for anyone.
    assert doc["defaultACLAccess"] == {"publishClientSend": False,
                                       "publishClientReceive": False,
                                       "subscribe": False, "unsubscribe": True}
    clients = {c["username"]: c for c in doc["clients"]}
    assert clients["V1"]["clientid"] == "tapsim-validator-V1"
    assert clients["V1"]["roles"] == [{"rolename": "validator-V1"}]


def test_only_the_backoffice_may_join_the_shared_tap_subscription() -> None:
    roles = _roles(security_document({"V1": "p1", "backoffice": "p3"}))
    shared = "$share/backoffice/tapsim/v1/taps/+"
    assert ("subscribeLiteral", shared, True) in roles["backoffice"]
    assert all(shared not in t and "taps/+" not in t for _, t, _ in roles["validator-V1"])


def test_passwords_are_stored_as_pbkdf2_sha512_hashes() -> None:
    doc = security_document({"V1": "s3cret-one", "backoffice": "s3cret-two"})
    assert "s3cret" not in json.dumps(doc)
    v1 = next(c for c in doc["clients"] if c["username"] == "V1")
    # The plugin's format (mosquitto 2.0 plugins/dynamic-security/auth.c: PBKDF2-HMAC-SHA512,
    # 64-byte hash, base64 salt and hash), checked against mosquitto_ctrl's output below.
    salt = base64.b64decode(v1["salt"])
    assert base64.b64decode(v1["password"]) == hashlib.pbkdf2_hmac(
        "sha512", b"s3cret-one", salt, v1["iterations"], 64)


def test_hash_format_matches_mosquitto_ctrl(tmp_path: Path) -> None:
    tool = find_binary("mosquitto_ctrl")
    if tool is None:
        missing("mosquitto_ctrl", "install the Debian package 'mosquitto'")
    path = tmp_path / "d.json"
    subprocess.run([tool, "dynsec", "init", str(path), "admin", "pw-of-admin"],
                   check=True, capture_output=True)
    admin = json.loads(path.read_text())["clients"][0]
    salt = base64.b64decode(admin["salt"])
    assert base64.b64encode(hashlib.pbkdf2_hmac(
        "sha512", b"pw-of-admin", salt, admin["iterations"], 64)).decode() == admin["password"]


def test_conf_tls_listener_needs_its_port(tmp_path: Path) -> None:
    files = TlsFiles(tmp_path / "ca", tmp_path / "c", tmp_path / "k")
    with pytest.raises(BrokerConfigError):
        mosquitto_conf(port=1, data_dir=tmp_path, security_file=None, tls=files)
    conf = mosquitto_conf(port=1883, data_dir=tmp_path, security_file=tmp_path / "s.json",
                          plugin=tmp_path / "dynsec.so", tls=files, tls_port=8883)
    assert "allow_anonymous false" in conf and "listener 8883 127.0.0.1" in conf
    assert f"certfile {tmp_path / 'c'}" in conf
    assert f"plugin_opt_config_file {tmp_path / 's.json'}" in conf
    assert f"max_packet_size {MAX_PACKET}" in conf and "log_dest stderr" in conf


def test_write_broker_config_gives_each_user_a_password(tmp_path: Path) -> None:
    try:
        find_plugin()
    except BrokerConfigError:
        missing("mosquitto_dynamic_security.so", "install the Debian package 'mosquitto'")
    cfg = write_broker_config(tmp_path, ["V1", "V2"], port=18830)
    assert set(cfg.credentials) == {"backoffice", "V1", "V2"}
    assert len(set(cfg.credentials.values())) == 3
    assert cfg.credentials["V1"] not in repr(cfg)
    assert cfg.security_file.stat().st_mode & 0o777 == 0o600
    assert cfg.credentials["V1"] not in cfg.security_file.read_text()


@pytest.mark.parametrize("bad", [["bus/1"], ["backoffice"], []])
def test_write_broker_config_refuses_bad_or_clashing_ids(tmp_path: Path, bad: list[str]) -> None:
    if not bad:
        with pytest.raises(BrokerConfigError, match="70000"):
            write_broker_config(tmp_path / "o", ["V1"], port=70000)
    else:
        with pytest.raises((WireError, BrokerConfigError)):
            write_broker_config(tmp_path / "o", bad, port=18830)
    assert not (tmp_path / "o").exists()


def test_test_ca_issues_a_server_certificate_for_localhost(tmp_path: Path) -> None:
    ca = make_test_ca(tmp_path)
    context = ssl.create_default_context(cafile=str(ca.cafile))
    context.load_cert_chain(ca.certfile, ca.keyfile)  # key matches certificate
    assert ca.keyfile.stat().st_mode & 0o777 == 0o600
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(ca.certfile.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
