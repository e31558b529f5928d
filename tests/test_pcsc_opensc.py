"""A third-party client reads the virtual card: OpenSC's opensc-tool (Debian package `opensc`)
over pcscd + vpcd, byte for byte what the in-process card answers."""

from __future__ import annotations

import datetime as dt
import re
import subprocess

import pytest

from emv import tlv
from emv.card.card import ATR, VirtualCard
from emv.card.image import personalise
from emv.card.profile import load_profile
from emv.kernel import Kernel, Send, TerminalConfig, TransactionInput
from emv.oda import builtin_test_ca_keys
from tests.fixtures.pcsc import ServeCard
from tests.fixtures.services import find_binary, missing

pytestmark = pytest.mark.service

PPSE = "00A404000E325041592E5359532E444446303100"
SELECT_DEBIT = "00A4040008A00000033301010100"
READ_11 = "00B2010C00"


def opensc(reader: str, *args: str) -> str:
    exe = find_binary("opensc-tool")
    if exe is None:
        missing("opensc-tool", "install the Debian package 'opensc'")
    done = subprocess.run([exe, "-r", reader, *args], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def responses(output: str) -> list[bytes]:
    """Each `Received (SW1=0x.., SW2=0x..):` block of opensc-tool -s: data || SW1 SW2."""
    out: list[bytes] = []
    for block in re.split(r"^Sending: .*$", output, flags=re.M)[1:]:
        head = re.search(r"Received \(SW1=0x([0-9A-Fa-f]{2}), SW2=0x([0-9A-Fa-f]{2})\)", block)
        assert head is not None, block
        data = b"".join(bytes.fromhex(line[:48]) for line in block.splitlines()[2:]
                        if line.strip())
        out.append(data + bytes.fromhex(head.group(1) + head.group(2)))
    return out


def test_opensc_tool_reads_the_virtual_card(pcscd: str, served_card: ServeCard) -> None:
    served_card("sscard3")
    atr = opensc(pcscd, "-a").strip()
    assert bytes.fromhex(atr.replace(":", "")) == ATR

    local = VirtualCard(personalise(load_profile("sscard3")))
    local.power_on()
    kernel = Kernel(TerminalConfig(ca_keys=builtin_test_ca_keys(), token_key=b"k" * 32),
                    TransactionInput(amount=200, date=dt.date(2026, 11, 23),
                                     unpredictable_number=bytes.fromhex("01020304")))
    start = kernel.start()
    assert isinstance(start, Send) and start.apdu.hex().upper() == PPSE
    step = kernel.receive(local.process(start.apdu))
    assert isinstance(step, Send) and step.apdu.hex().upper() == SELECT_DEBIT
    gpo = kernel.receive(local.process(step.apdu))
    assert isinstance(gpo, Send)

    got = responses(opensc(pcscd, "-s", PPSE, "-s", SELECT_DEBIT, "-s", READ_11,
                           "-s", gpo.apdu.hex().upper()))
    assert len(got) == 4
    # PPSE, SELECT and the record are fixed data: the same bytes as the in-process card.
    assert got[0] == local.process(bytes.fromhex(PPSE))
    assert got[1] == local.process(bytes.fromhex(SELECT_DEBIT))
    assert got[2] == local.process(bytes.fromhex(READ_11))
    # The GPO answer carries the served card's own counter and cryptogram: its shape.
    assert got[3][-2:] == b"\x90\x00"
    answer = tlv.flatten(tlv.decode(got[3][:-2]))
    assert {0x82, 0x94, 0x9F36, 0x9F26, 0x9F27, 0x9F10, 0x57, 0x9F4B} <= set(answer)
