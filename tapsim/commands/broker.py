"""`tapsim broker config`: a Mosquitto set-up for a fleet (credentials, ACL, TLS, keys)."""

from __future__ import annotations

import argparse
import getpass
import os
from pathlib import Path

from tapsim.errors import UserError
from wire.broker import (
    BACKOFFICE_USER,
    BrokerConfigError,
    TlsFiles,
    check_port,
    check_port_free,
    find_plugin,
    write_broker_config,
    write_secret,
)
from wire.errors import WireError
from wire.signing import generate_signing_key, key_id_of, private_key_pem, public_key_pem
from wire.testca import make_test_ca
from wire.topics import check_validator_id


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("broker", help="Mosquitto configuration for validators and back office")
    bs = p.add_subparsers(dest="broker_command", metavar="SUBCOMMAND")
    bs.required = True
    cfg = bs.add_parser(
        "config", help="write mosquitto.conf, password file, ACL and the deny-list signing key",
        description="Write a Mosquitto configuration where every validator has its own "
                    "password and client id and may publish only tapsim/v1/taps/<its id> and "
                    "read the deny list and its own commits; only the back office may read the "
                    "taps and write the deny list (Mosquitto's dynamic-security plugin, "
                    "dynamic-security.json). Also writes the back "
                    "office's Ed25519 deny-list signing key (keep backoffice-signing.pem "
                    "secret; give validators backoffice-signing.pub.pem) and one password file "
                    "per user under credentials/.")
    cfg.add_argument("--out", type=Path, required=True, metavar="DIR",
                     help="directory to write the configuration into (made if missing)")
    cfg.add_argument("--validators", required=True, metavar="ID,ID,...",
                     help="validator ids (broker user names)")
    cfg.add_argument("--port", type=int, default=1883,
                     help="plain MQTT listener port, 1-65535, free at config time "
                          "(default 1883)")
    cfg.add_argument("--bind", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    cfg.add_argument("--tls-port", type=int, metavar="PORT",
                     help="add a TLS listener on PORT with a TEST CA made here (ca.pem)")
    cfg.add_argument("--tls-only", action="store_true", help="no plain listener")
    cfg.set_defaults(func=config)


def _check_out(out: Path) -> Path:
    """``out`` as an absolute path if it is (or can be made) a writable directory."""
    out = out.resolve()
    probe = out
    while not probe.exists():
        probe = probe.parent
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: not a directory")
    if not probe.is_dir():
        raise UserError(f"--out {out}: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"--out {out}: {probe} is not writable")
    return out


def _check(args: argparse.Namespace) -> list[str]:
    """Every input checked before anything is written; the validator ids."""
    ids = [v.strip() for v in args.validators.split(",") if v.strip()]
    if not ids:
        raise UserError("--validators names no validator")
    if args.tls_only and args.tls_port is None:
        raise UserError("--tls-only needs --tls-port")
    try:
        for vid in ids:
            check_validator_id(vid)
            if vid == BACKOFFICE_USER:
                raise UserError(f"--validators: {vid!r} is the back office's broker user")
        if not args.tls_only:
            check_port(args.port)
        if args.tls_port is not None:
            check_port(args.tls_port, "--tls-port")
            if not args.tls_only and args.tls_port == args.port:
                raise UserError(f"--tls-port {args.tls_port} is also --port")
        if not args.tls_only:
            check_port_free(args.bind, args.port)
        if args.tls_port is not None:
            check_port_free(args.bind, args.tls_port, "--tls-port")
        find_plugin()
    except (BrokerConfigError, WireError) as exc:
        raise UserError(str(exc)) from None
    # Absolute paths, so the broker can be started from any directory.
    args.out = _check_out(args.out)
    return ids


def config(args: argparse.Namespace) -> int:
    ids = _check(args)
    # mosquitto started as root drops to its own user unless told to stay the files' owner.
    run_as = getpass.getuser() if os.geteuid() == 0 else None
    try:
        tls = None
        if args.tls_port is not None:
            ca = make_test_ca(args.out / "tls")
            tls = TlsFiles(ca.cafile, ca.certfile, ca.keyfile)
        cfg = write_broker_config(args.out, ids, port=args.port, tls=tls,
                                  tls_port=args.tls_port, bind=args.bind,
                                  plain_listener=not args.tls_only, run_as=run_as)
        creds = args.out / "credentials"
        creds.mkdir(mode=0o700, exist_ok=True)
        for user, password in cfg.credentials.items():
            write_secret(creds / user, password.encode() + b"\n")
        key = generate_signing_key()
        write_secret(args.out / "backoffice-signing.pem", private_key_pem(key))
        (args.out / "backoffice-signing.pub.pem").write_bytes(public_key_pem(key.public_key()))
    except (BrokerConfigError, WireError) as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:  # the directory checked fine, yet a write failed (disk full ...)
        raise UserError(f"--out {args.out}: {exc.strerror or exc}") from None
    print(f"wrote {cfg.conf} (users: backoffice, {', '.join(sorted(set(ids)))})")
    print(f"deny-list signing key id {key_id_of(key.public_key())}: "
          f"{args.out / 'backoffice-signing.pem'} (secret), "
          f"{args.out / 'backoffice-signing.pub.pem'} (for validators)")
    print(f"start the broker:  mosquitto -c {cfg.conf}")
    print(f"a validator:       TAPSIM_MQTT_PASSWORD=$(cat {creds}/{ids[0]}) tapsim terminal run "
          f"--validator-id {ids[0]} --broker mqtt://{ids[0]}@{args.bind}:{args.port} "
          f"--deny-list-key {args.out / 'backoffice-signing.pub.pem'}")
    return 0
