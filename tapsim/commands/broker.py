"""`tapsim broker config`: a Mosquitto set-up for a fleet (credentials, ACL, TLS, keys)."""

from __future__ import annotations

import argparse
import getpass
import os
from pathlib import Path

from tapsim.errors import UserError
from wire.broker import BrokerConfigError, TlsFiles, write_broker_config
from wire.errors import WireError
from wire.signing import generate_signing_key, key_id_of, private_key_pem, public_key_pem
from wire.testca import make_test_ca


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("broker", help="Mosquitto configuration for validators and back office")
    bs = p.add_subparsers(dest="broker_command", metavar="SUBCOMMAND")
    bs.required = True
    cfg = bs.add_parser(
        "config", help="write mosquitto.conf, password file, ACL and the deny-list signing key",
        description="Write a Mosquitto configuration where every validator has its own "
                    "password and may publish only tapsim/v1/taps/<its id> and read the deny "
                    "list; only the back office may write the deny list. Also writes the back "
                    "office's Ed25519 deny-list signing key (keep backoffice-signing.pem "
                    "secret; give validators backoffice-signing.pub.pem) and one password file "
                    "per user under credentials/.")
    cfg.add_argument("--out", type=Path, required=True, metavar="DIR")
    cfg.add_argument("--validators", required=True, metavar="ID,ID,...",
                     help="validator ids (broker user names)")
    cfg.add_argument("--port", type=int, default=1883)
    cfg.add_argument("--bind", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    cfg.add_argument("--tls-port", type=int, metavar="PORT",
                     help="add a TLS listener on PORT with a TEST CA made here (ca.pem)")
    cfg.add_argument("--tls-only", action="store_true", help="no plain listener")
    cfg.set_defaults(func=config)


def _write_secret(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def config(args: argparse.Namespace) -> int:
    ids = [v.strip() for v in args.validators.split(",") if v.strip()]
    if not ids:
        raise UserError("--validators names no validator")
    if args.tls_only and args.tls_port is None:
        raise UserError("--tls-only needs --tls-port")
    # Absolute paths, so the broker can be started from any directory; and mosquitto
    # started as root drops to its own user unless told to stay the files' owner.
    args.out = args.out.resolve()
    run_as = getpass.getuser() if os.geteuid() == 0 else None
    tls = None
    if args.tls_port is not None:
        ca = make_test_ca(args.out / "tls")
        tls = TlsFiles(ca.cafile, ca.certfile, ca.keyfile)
    try:
        cfg = write_broker_config(args.out, ids, port=args.port, tls=tls,
                                  tls_port=args.tls_port, bind=args.bind,
                                  plain_listener=not args.tls_only, run_as=run_as)
    except (BrokerConfigError, WireError) as exc:
        raise UserError(str(exc)) from None
    creds = args.out / "credentials"
    creds.mkdir(mode=0o700, exist_ok=True)
    for user, password in cfg.credentials.items():
        _write_secret(creds / user, password.encode() + b"\n")
    key = generate_signing_key()
    _write_secret(args.out / "backoffice-signing.pem", private_key_pem(key))
    (args.out / "backoffice-signing.pub.pem").write_bytes(public_key_pem(key.public_key()))
    print(f"wrote {cfg.conf} (users: backoffice, {', '.join(sorted(set(ids)))})")
    print(f"deny-list signing key id {key_id_of(key.public_key())}: "
          f"{args.out / 'backoffice-signing.pem'} (secret), "
          f"{args.out / 'backoffice-signing.pub.pem'} (for validators)")
    print(f"start the broker:  mosquitto -c {cfg.conf}")
    print(f"a validator:       TAPSIM_MQTT_PASSWORD=$(cat {creds}/{ids[0]}) tapsim terminal run "
          f"--validator-id {ids[0]} --broker mqtt://{ids[0]}@{args.bind}:{args.port} "
          f"--deny-list-key {args.out / 'backoffice-signing.pub.pem'}")
    return 0
