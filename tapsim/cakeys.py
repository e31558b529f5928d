"""The ``--ca-keys FILE`` option every command that runs the kernel shares.

Without it the kernel trusts the shipped TEST CA only (so the project's virtual cards pass
ODA); with it, the payment-system CA keys of the file (format: ``emv.capk``), and nothing else:
a deployment must not trust the test CA.  ``TAPSIM_CA_KEYS`` gives the same file when the
option is left out, which is also how ``tapsim sim`` hands it to its worker processes.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from tapsim.errors import UserError

if TYPE_CHECKING:
    from emv.oda import CaKeys

CA_KEYS_ENV = "TAPSIM_CA_KEYS"
CA_KEYS_HELP = ("CA public keys file (RID index expiry algo exponent key sha1 checksum per line, "
                "the capk.txt of emv-tools/Proxmark3; README.md, CA public keys) instead of the "
                f"shipped TEST CA; default: ${CA_KEYS_ENV} if set")


def add_ca_keys_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ca-keys", type=Path, default=None, metavar="FILE", help=CA_KEYS_HELP)


def ca_keys_path(option: Path | None) -> Path | None:
    """The file the option or the environment names, or None for the shipped test CA."""
    if option is not None:
        return option
    raw = os.environ.get(CA_KEYS_ENV)
    return Path(raw) if raw else None


def resolve_ca_keys(option: Path | None) -> CaKeys:
    """The CA keys the kernel trusts; a bad file is a UserError naming its line."""
    from emv.capk import CaKeyFileError, load_ca_keys  # noqa: PLC0415 - keeps --help light
    from emv.oda import builtin_test_ca_keys  # noqa: PLC0415

    path = ca_keys_path(option)
    if path is None:
        return builtin_test_ca_keys()
    try:
        return load_ca_keys(path)
    except CaKeyFileError as exc:
        raise UserError(str(exc)) from None
