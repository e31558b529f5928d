"""`tapsim tlv`: decode any BER-TLV blob into a named tree."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from tapsim.errors import UserError

if TYPE_CHECKING:
    from emv.tlv import Tlv


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("tlv", help="decode a BER-TLV blob (hex) into a named tree")
    p.add_argument("hex", metavar="HEX", help="the blob in hex (spaces allowed)")
    p.add_argument("--json", action="store_true", help="print the tree as JSON")
    p.set_defaults(func=main)


def _node(node: Tlv) -> dict[str, Any]:
    from emv import tlv  # noqa: PLC0415
    from emv.tags import tag_name  # noqa: PLC0415

    out: dict[str, Any] = {"tag": tlv.tag_hex(node.tag), "name": tag_name(node.tag),
                           "length": len(node.value)}
    if node.children is not None:
        out["children"] = [_node(c) for c in node.children]
    else:
        out["value"] = node.value.hex().upper()
    return out


def main(args: argparse.Namespace) -> int:
    from emv import tlv  # noqa: PLC0415
    from emv.describe import tree_lines  # noqa: PLC0415

    text = "".join(args.hex.split())
    if not text:
        raise UserError("no hex given: nothing to decode")
    try:
        blob = bytes.fromhex(text)
    except ValueError:
        bad = next((i for i, ch in enumerate(text) if ch not in "0123456789abcdefABCDEF"),
                   len(text))
        raise UserError(f"not hex at character {bad}"
                        + (" (odd number of digits)" if bad == len(text) else "")) from None
    try:
        nodes = tlv.decode(blob)
    except tlv.TlvError as exc:
        raise UserError(f"malformed TLV at {exc}") from None
    if args.json:
        print(json.dumps([_node(n) for n in nodes], indent=1))
    else:
        print("\n".join(tree_lines(nodes)))
    return 0
