"""Human-readable views of APDUs and TLV data, as a card-reading tool shows them.

Formatting only (strings in, strings out); printing is the caller's business.
PAN-bearing objects (5A, 57, 9F1F...) are masked: a trace is safe to paste.
"""

from __future__ import annotations

from emv import tlv
from emv.apdu import SW, ApduError, CommandApdu, ResponseApdu
from emv.pan import PanError, mask_pan
from emv.tags import tag_format, tag_name

_COMMANDS = {
    (0x00, 0xA4): "SELECT", (0x00, 0xB2): "READ RECORD", (0x80, 0xA8): "GET PROCESSING OPTIONS",
    (0x80, 0xCA): "GET DATA", (0x80, 0xAE): "GENERATE AC", (0x80, 0x5C): "GET BALANCE",
    (0x80, 0x50): "INITIALIZE", (0x80, 0x54): "DEBIT FOR PURCHASE", (0x80, 0x52): "CREDIT FOR LOAD",
    (0x00, 0x88): "INTERNAL AUTHENTICATE", (0x00, 0x84): "GET CHALLENGE",
}
# 9F0C: the T-Union e-purse's public data, which carries the card number (often the PAN).
SENSITIVE = {0x5A, 0x57, 0x9F1F, 0x9F6B, 0x56, 0x9F0C}


def command_name(raw: bytes) -> str:
    try:
        apdu = CommandApdu.parse(raw)
    except ApduError:
        return "malformed command"
    name = _COMMANDS.get((apdu.cla, apdu.ins), f"INS {apdu.ins:02X}")
    if apdu.ins == 0xB2:
        name += f" SFI {apdu.p2 >> 3} record {apdu.p1}"
    elif apdu.ins == 0xA4:
        ppse = apdu.data.startswith(b"2PAY")
        name += " " + (apdu.data.decode("ascii") if ppse else apdu.data.hex().upper())
    elif apdu.ins == 0xCA:
        name += f" {apdu.p1:02X}{apdu.p2:02X}"
    return name


def safe_value(tag: int, value: bytes) -> str:
    """A value for display: masked when it carries a PAN, text when it is text."""
    if tag in SENSITIVE:
        digits = value.hex().upper()
        pan = digits.split("D", 1)[0]
        try:
            masked = mask_pan(pan)
        except PanError:
            return f"<{len(value)} bytes, masked>"
        return masked + ("D..." if "D" in digits else "")
    fmt = tag_format(tag)
    if fmt in ("an", "ans") and all(0x20 <= b < 0x7F for b in value):
        return f'"{value.decode("ascii")}"'
    return value.hex().upper()


def tree_lines(nodes: list[tlv.Tlv] | tuple[tlv.Tlv, ...], indent: int = 0) -> list[str]:
    """One line per data object: tag, name, length and (for primitives) the value."""
    lines = []
    pad = "  " * indent
    for node in nodes:
        head = f"{pad}{tlv.tag_hex(node.tag)} {tag_name(node.tag)} [{len(node.value)}]"
        if node.children is not None:
            lines.append(head)
            lines.extend(tree_lines(node.children, indent + 1))
        else:
            lines.append(f"{head} {safe_value(node.tag, node.value)}")
    return lines


def safe_hex(raw: bytes) -> str:
    """Hex of an APDU with PAN-bearing values blanked (for traces in logs or JSON)."""
    try:
        body = ResponseApdu.parse(raw).data
        nodes = tlv.decode(body)
    except (ApduError, tlv.TlvError):
        return raw.hex().upper()
    text = raw.hex().upper()
    for node in tlv.walk(nodes):
        if node.tag in SENSITIVE and node.children is None and node.value:
            text = text.replace(node.value.hex().upper(), "*" * (2 * len(node.value)), 1)
    return text


def response_lines(raw: bytes) -> list[str]:
    try:
        r = ResponseApdu.parse(raw)
    except ApduError as exc:
        return [f"malformed response: {exc}"]
    lines = [f"SW {r.sw:04X} {SW.describe(r.sw)}"]
    if r.data:
        try:
            lines.extend(tree_lines(tlv.decode(r.data)))
        except tlv.TlvError as exc:
            lines.append(f"(not TLV: {exc}) {r.data.hex().upper()}")
    return lines
