"""Command and response APDUs (ISO/IEC 7816-4) and the status words a tap meets."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class ApduError(ValueError):
    """Bytes that are not a well-formed APDU."""


class SW(IntEnum):
    """Status words; the name says what the card meant."""

    OK = 0x9000
    WARNING_NO_INFO = 0x6200
    SELECTED_FILE_INVALIDATED = 0x6283
    WRONG_LENGTH = 0x6700
    SECURITY_NOT_SATISFIED = 0x6982
    AUTH_METHOD_BLOCKED = 0x6983
    REFERENCE_DATA_INVALIDATED = 0x6984
    CONDITIONS_NOT_SATISFIED = 0x6985
    COMMAND_NOT_ALLOWED = 0x6986
    WRONG_DATA = 0x6A80
    FUNCTION_NOT_SUPPORTED = 0x6A81
    FILE_NOT_FOUND = 0x6A82
    RECORD_NOT_FOUND = 0x6A83
    NOT_ENOUGH_MEMORY = 0x6A84
    WRONG_P1P2 = 0x6A86
    REFERENCED_DATA_NOT_FOUND = 0x6A88
    WRONG_P1P2_LEGACY = 0x6B00
    INS_NOT_SUPPORTED = 0x6D00
    CLA_NOT_SUPPORTED = 0x6E00
    UNKNOWN = 0x6F00
    # e-purse (JT/T 978 / PBOC e-purse)
    INSUFFICIENT_BALANCE = 0x9401
    MAC_INVALID = 0x9302
    APPLICATION_BLOCKED = 0x9303

    @classmethod
    def describe(cls, sw: int) -> str:
        """Name of a status word, with 61XX/6CXX decoded."""
        try:
            return cls(sw).name
        except ValueError:
            pass
        if sw >> 8 == 0x61:
            return f"MORE_DATA({sw & 0xFF})"
        if sw >> 8 == 0x6C:
            return f"WRONG_LE(exact {sw & 0xFF})"
        if sw >> 8 == 0x63 and sw & 0xF0 == 0xC0:
            return f"VERIFY_FAILED({sw & 0x0F} tries left)"
        return f"SW_{sw:04X}"


@dataclass(frozen=True, slots=True)
class CommandApdu:
    """A short command APDU (EMV never needs extended length)."""

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = b""
    le: int | None = None  # None: no Le field; 0 means "up to 256"

    def to_bytes(self) -> bytes:
        head = bytes((self.cla, self.ins, self.p1, self.p2))
        if len(self.data) > 255:
            raise ApduError(f"command data of {len(self.data)} bytes needs extended length")
        body = bytes((len(self.data),)) + self.data if self.data else b""
        tail = b"" if self.le is None else bytes((self.le & 0xFF,))
        return head + body + tail

    @classmethod
    def parse(cls, raw: bytes) -> CommandApdu:
        """Cases 1-4 of ISO 7816-4 short APDUs; anything else raises ApduError."""
        n = len(raw)
        if n < 4:
            raise ApduError(f"command APDU of {n} bytes is shorter than its 4-byte header")
        cla, ins, p1, p2 = raw[0], raw[1], raw[2], raw[3]
        if n == 4:
            return cls(cla, ins, p1, p2)
        if n == 5:
            return cls(cla, ins, p1, p2, b"", raw[4])
        lc = raw[4]
        if lc == 0:
            raise ApduError("Lc of 0 with more bytes following (extended APDUs unsupported)")
        if n == 5 + lc:
            return cls(cla, ins, p1, p2, bytes(raw[5:]))
        if n == 6 + lc:
            return cls(cla, ins, p1, p2, bytes(raw[5 : 5 + lc]), raw[5 + lc])
        raise ApduError(f"Lc says {lc} data bytes but the APDU has {n - 5} after the header")


@dataclass(frozen=True, slots=True)
class ResponseApdu:
    data: bytes
    sw: int

    @property
    def ok(self) -> bool:
        return self.sw == SW.OK

    def to_bytes(self) -> bytes:
        return self.data + self.sw.to_bytes(2, "big")

    @classmethod
    def parse(cls, raw: bytes) -> ResponseApdu:
        if len(raw) < 2:
            raise ApduError(f"response APDU of {len(raw)} bytes has no status word")
        return cls(bytes(raw[:-2]), int.from_bytes(raw[-2:], "big"))


# The commands of a contactless tap.
SELECT, READ_RECORD, GET_PROCESSING_OPTIONS, GENERATE_AC, GET_DATA = 0xA4, 0xB2, 0xA8, 0xAE, 0xCA
INTERNAL_AUTHENTICATE, GET_CHALLENGE = 0x88, 0x84
# e-purse (JT/T 978 / PBOC e-purse, CLA 80)
INITIALIZE, PURCHASE, CREDIT_FOR_LOAD, GET_BALANCE = 0x50, 0x54, 0x52, 0x5C


def select(name: bytes) -> CommandApdu:
    """SELECT by DF name (PPSE or an AID), first or only occurrence."""
    return CommandApdu(0x00, SELECT, 0x04, 0x00, name, 0)


def read_record(sfi: int, record: int) -> CommandApdu:
    return CommandApdu(0x00, READ_RECORD, record, (sfi << 3) | 0x04, b"", 0)


def get_processing_options(pdol_data: bytes) -> CommandApdu:
    """GPO with the PDOL answer wrapped in tag 83."""
    return CommandApdu(0x80, GET_PROCESSING_OPTIONS, 0x00, 0x00,
                       bytes((0x83, len(pdol_data))) + pdol_data, 0)


def get_data(tag: int) -> CommandApdu:
    return CommandApdu(0x80, GET_DATA, tag >> 8, tag & 0xFF, b"", 0)


def generate_ac(reference: int, cdol_data: bytes) -> CommandApdu:
    """GENERATE AC; ``reference`` is 0x00 AAC, 0x40 TC, 0x80 ARQC."""
    return CommandApdu(0x80, GENERATE_AC, reference, 0x00, cdol_data, 0)
