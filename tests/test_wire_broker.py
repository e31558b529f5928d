"""wire.broker / wire.testca: the generated ACL, config and password file."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from tests.fixtures.services import find_binary, missing
from wire import WireError
from wire.broker import (
    BrokerConfigError,
    TlsFiles,
    acl_text,
    mosquitto_conf,
    write_broker_config,
    write_password_file,
)
from wire.testca import make_test_ca


def test_acl_pins_each_validator_to_its_own_tap_topic() -> None:
    text = acl_text(["V2", "V1"])
    blocks = {b.splitlines()[0]: b.splitlines()[1:] for b in text.split("\n\n") if b.strip()
              and not b.startswith("#")}
    assert blocks["user V1"] == ["topic write tapsim/v1/taps/V1",
                                 "topic read tapsim/v1/denylist/snapshot",
                                 "topic read tapsim/v1/denylist/delta",
                                 "topic read tapsim/v1/fares/version"]
    assert "topic write tapsim/v1/taps/V2" in blocks["user V2"]
    assert not any("denylist" in line and "write" in line for line in blocks["user V1"])
    assert not any(line.startswith("pattern") for line in text.splitlines())


def test_acl_refuses_bad_or_clashing_ids() -> None:
    with pytest.raises(WireError):
        acl_text(["bus/1"])
    with pytest.raises(BrokerConfigError):
        acl_text(["backoffice"])


def test_conf_tls_listener_needs_its_port(tmp_path: Path) -> None:
    files = TlsFiles(tmp_path / "ca", tmp_path / "c", tmp_path / "k")
    with pytest.raises(BrokerConfigError):
        mosquitto_conf(port=1, data_dir=tmp_path, password_file=None, acl_file=None, tls=files)
    conf = mosquitto_conf(port=1883, data_dir=tmp_path, password_file=tmp_path / "p",
                          acl_file=tmp_path / "a", tls=files, tls_port=8883)
    assert "allow_anonymous false" in conf and "listener 8883 127.0.0.1" in conf
    assert f"certfile {tmp_path / 'c'}" in conf


def test_password_file_is_hashed_and_private(tmp_path: Path) -> None:
    if find_binary("mosquitto_passwd") is None:
        missing("mosquitto_passwd", "install the Debian package 'mosquitto'")
    path = tmp_path / "passwd"
    write_password_file(path, {"V1": "s3cret-one", "backoffice": "s3cret-two"})
    text = path.read_text()
    assert "s3cret" not in text and text.startswith("V1:$7$")
    assert path.stat().st_mode & 0o777 == 0o600


def test_password_file_refuses_bad_user_names(tmp_path: Path) -> None:
    with pytest.raises(BrokerConfigError):
        write_password_file(tmp_path / "p", {"a:b": "x"})


def test_write_broker_config_gives_each_user_a_password(tmp_path: Path) -> None:
    if find_binary("mosquitto_passwd") is None:
        missing("mosquitto_passwd", "install the Debian package 'mosquitto'")
    cfg = write_broker_config(tmp_path, ["V1", "V2"], port=18830)
    assert set(cfg.credentials) == {"backoffice", "V1", "V2"}
    assert len(set(cfg.credentials.values())) == 3
    assert cfg.credentials["V1"] not in repr(cfg)
    assert cfg.acl_file.read_text() == acl_text(["V1", "V2"])


def test_test_ca_issues_a_server_certificate_for_localhost(tmp_path: Path) -> None:
    ca = make_test_ca(tmp_path)
    context = ssl.create_default_context(cafile=str(ca.cafile))
    context.load_cert_chain(ca.certfile, ca.keyfile)  # key matches certificate
    assert ca.keyfile.stat().st_mode & 0o777 == 0o600
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(ca.certfile.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
