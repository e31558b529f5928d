"""Sub-commands of `tapsim`; each module exposes ``register(subparsers)``."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from tapsim.commands import account, backoffice, broker, card, fare, sim, tap, terminal, tlv

Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]

COMMANDS: list[Register] = [
    sim.register,
    tap.register,
    card.register,
    tlv.register,
    fare.register,
    terminal.register,
    broker.register,
    backoffice.register,
    account.register,
]
