"""Sub-commands of `tapsim`: each name and the module whose ``register(subparsers)`` adds it.

Modules are named, not imported, so that a run imports only its own command's module
(tapsim/cli.py); the order is the order of `tapsim --help`.
"""

from __future__ import annotations

COMMANDS: dict[str, str] = {
    "sim": "tapsim.commands.sim",
    "tap": "tapsim.commands.tap",
    "card": "tapsim.commands.card",
    "tlv": "tapsim.commands.tlv",
    "fare": "tapsim.commands.fare",
    "terminal": "tapsim.commands.terminal",
    "broker": "tapsim.commands.broker",
    "backoffice": "tapsim.commands.backoffice",
    "account": "tapsim.commands.account",
    "clearing": "tapsim.commands.clearing",
    "issuer": "tapsim.commands.issuer",
    "load": "tapsim.commands.load",
}
