"""mqtts:// always means TLS, verified against --ca or the system trust store; a certificate
that is not trusted, a host-name mismatch or a plain port is an error naming the broker."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from backoffice.consumer.link import BrokerAddress
from tapsim.cli import main
from terminal.uplink import BrokerSettings
from tests.fixtures.mosquitto import BrokerFactory
from tests.fixtures.services import free_port
from wire.testca import make_test_ca
from wire.tls import TlsError, check_broker, tls_context


def test_mqtts_without_a_ca_is_tls_against_the_system_store() -> None:
    st = BrokerSettings.from_url("mqtts://V1@broker.example", "c")
    addr = BrokerAddress.from_url("mqtts://backoffice@broker.example")
    for link in (st, addr):
        assert link.tls and link.port == 8883
        context = link.tls_context()
        assert context is not None
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
        assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert not BrokerSettings.from_url("mqtt://h", "c").tls
    assert BrokerAddress.from_url("mqtt://h").tls_context() is None


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A TLS server whose certificate names broker.example only (and its CA file)."""
    ca = make_test_ca(tmp_path / "other", hosts=("broker.example",))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(ca.certfile, ca.keyfile)
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            try:
                with context.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port, ca.cafile
    stop.set()
    thread.join(2)
    sock.close()


def test_a_host_name_mismatch_names_the_broker(tls_server: tuple[int, Path]) -> None:
    port, cafile = tls_server
    with pytest.raises(TlsError, match=rf"broker mqtts://localhost:{port}: certificate not "
                                       r"accepted: .*(?i:hostname mismatch)"):
        check_broker("localhost", port, tls_context(cafile))


def test_an_unreachable_broker_is_not_an_error() -> None:
    assert check_broker("127.0.0.1", free_port(), tls_context(None), timeout=1.0) is False


def test_a_plain_port_is_not_tls(broker_factory: BrokerFactory) -> None:
    b = broker_factory()
    with pytest.raises(TlsError, match=rf"mqtts://127.0.0.1:{b.port}: no TLS handshake"):
        check_broker(b.host, b.port, tls_context(None))


def test_a_bad_ca_file(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate")
    with pytest.raises(TlsError, match="--ca"):
        tls_context(tmp_path / "ca.pem")


@pytest.mark.service
@pytest.mark.parametrize("ca", ["none", "other"])
def test_commands_refuse_a_broker_they_cannot_trust(broker_factory: BrokerFactory,
                                                    tmp_path: Path, ca: str,
                                                    capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The test broker's CA is in no system store: without --ca (or with another CA) both
    commands stop at once, naming the broker, before any password goes out."""
    b = broker_factory(validators=["V1"], tls=True, plain=False)
    monkeypatch.setenv("TAPSIM_MQTT_PASSWORD", "s3cret")
    extra = [] if ca == "none" else ["--ca", str(make_test_ca(tmp_path / "o").cafile)]
    url = f"mqtts://V1@localhost:{b.tls_port}"
    assert main(["terminal", "run", "--validator-id", "V1", "--broker", url, "--journal",
                 str(tmp_path / "j"), "--taps", "1", *extra]) == 2
    err = capsys.readouterr().err
    assert f"broker mqtts://localhost:{b.tls_port}: certificate not accepted" in err
    assert main(["backoffice", "run", "--db", str(tmp_path / "bo.db"), "--broker",
                 f"mqtts://backoffice@localhost:{b.tls_port}", *extra]) == 2
    err = capsys.readouterr().err
    assert f"broker mqtts://localhost:{b.tls_port}: certificate not accepted" in err
    assert "s3cret" not in err
    assert not (tmp_path / "j").exists()
