"""CA public keys from a file: what a terminal operator loads to verify real cards' fDDA.

One key per line, fields separated by blanks, ``#`` starting a comment::

    # RID          index expiry algo exponent modulus (or SM2 X||Y)   hash checksum
    a0:00:00:00:03 07    171231 rsa  03       a8:9f:25:...:72:5f      sha1 b4:bc:56:...:b1:72

The layout is the ``capk.txt`` of emv-tools and Proxmark3 (``client/resources/capk.txt``), so
their files load as they are.  Hex fields may be written with or without colons, in either
case.  ``expiry`` is YYMMDD (``000000``: none).  ``algo`` is ``rsa`` (exponent ``03`` or
``010001``; the checksum is ``sha1`` of RID || index || modulus || exponent, EMV Book 2
§11.2.2) or ``sm2`` (a PBOC 3.0 SM2 CA key: exponent ``-``, the 64-byte X || Y in place of the
modulus; the checksum is ``sha1`` or ``sm3`` of RID || index || X || Y).

Every line is checked on load: field count, hex, RID of 5 bytes, the key itself, and the
checksum.  A malformed line, a checksum that does not match, or a (RID, index) given twice
raises :class:`CaKeyFileError` naming the file and line; nothing is half loaded.  Keys past
their expiry on ``today`` are left out (a terminal must not use them, Book 2 §11.2.2).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from emv.crypto.rsa_certs import CaKeyTable, RsaInputError, RsaPublicKey
from emv.crypto.sm2 import PUBLIC_KEY_SIZE
from emv.crypto.sm3 import sm3
from emv.oda import CaKeys

FIELDS = 8


class CaKeyFileError(ValueError):
    """A CA key file that cannot be used: which file, which line, what is wrong."""

    def __init__(self, source: str, line: int, message: str) -> None:
        self.source = source
        self.line = line
        super().__init__(f"{source}:{line}: {message}")


@dataclass(frozen=True)
class CaKeyEntry:
    """One CA public key as the file gives it."""

    rid: bytes
    index: int
    expiry: dt.date | None
    algorithm: str  # "rsa" or "sm2"
    key: bytes  # modulus, or X || Y
    exponent: bytes  # b"" for SM2
    line: int


def _hex(field: str, what: str, source: str, line: int) -> bytes:
    try:
        return bytes.fromhex(field.replace(":", ""))
    except ValueError:
        raise CaKeyFileError(source, line, f"{what} is not hex: {field[:16]!r}") from None


def _expiry(field: str, source: str, line: int) -> dt.date | None:
    if field == "000000":
        return None
    if len(field) != 6 or not field.isdigit():
        raise CaKeyFileError(source, line, f"expiry {field!r} is not YYMMDD")
    try:
        return dt.date(2000 + int(field[:2]), int(field[2:4]), int(field[4:6]))
    except ValueError:
        raise CaKeyFileError(source, line, f"expiry {field!r} is not a date") from None


def parse_line(text: str, source: str, line: int) -> CaKeyEntry | None:
    """One line of a CA key file: an entry, or None for a blank or comment line."""
    text = text.split("#", 1)[0].strip()
    if not text:
        return None
    fields = text.split()
    if len(fields) != FIELDS:
        raise CaKeyFileError(source, line, f"{len(fields)} fields, want {FIELDS}: RID index "
                                           "expiry algo exponent key hash checksum")
    rid_f, index_f, expiry_f, algo, exponent_f, key_f, hash_f, check_f = fields
    rid = _hex(rid_f, "RID", source, line)
    if len(rid) != 5:
        raise CaKeyFileError(source, line, f"RID is {len(rid)} bytes, want 5")
    index_b = _hex(index_f, "index", source, line)
    if len(index_b) != 1:
        raise CaKeyFileError(source, line, "index is one byte (two hex digits)")
    expiry = _expiry(expiry_f, source, line)
    key = _hex(key_f, "key", source, line)
    checksum = _hex(check_f, "checksum", source, line)
    algo, hash_f = algo.lower(), hash_f.lower()
    if algo == "rsa":
        exponent = _hex(exponent_f, "exponent", source, line)
        try:
            RsaPublicKey(key, exponent)
        except RsaInputError as exc:
            raise CaKeyFileError(source, line, f"RSA key: {exc}") from None
    elif algo == "sm2":
        if exponent_f != "-":
            raise CaKeyFileError(source, line, "an SM2 key has no exponent: write '-'")
        exponent = b""
        if len(key) != PUBLIC_KEY_SIZE:
            raise CaKeyFileError(source, line, f"SM2 key is {len(key)} bytes, want "
                                               f"{PUBLIC_KEY_SIZE} (X || Y)")
    else:
        raise CaKeyFileError(source, line, f"algorithm {algo!r}: want rsa or sm2")
    covered = rid + index_b + key + exponent
    if hash_f == "sha1":
        digest = hashlib.sha1(covered).digest()  # noqa: S324 - what EMV Book 2 defines
    elif hash_f == "sm3" and algo == "sm2":
        digest = sm3(covered)
    else:
        raise CaKeyFileError(source, line, f"checksum algorithm {hash_f!r}: want sha1"
                                           + (" or sm3" if algo == "sm2" else ""))
    if digest != checksum:
        raise CaKeyFileError(source, line, f"checksum mismatch for RID {rid.hex().upper()} "
                                           f"index {index_b.hex().upper()}: the key is damaged "
                                           "or the checksum belongs to another key")
    return CaKeyEntry(rid=rid, index=index_b[0], expiry=expiry, algorithm=algo, key=key,
                      exponent=exponent, line=line)


def parse_ca_keys(text: str, source: str = "<ca keys>") -> list[CaKeyEntry]:
    """Every key of a file's text, checked; duplicates of (RID, index) refused."""
    entries: list[CaKeyEntry] = []
    seen: dict[tuple[bytes, int], int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        entry = parse_line(raw, source, number)
        if entry is None:
            continue
        where = (entry.rid, entry.index)
        if where in seen:
            raise CaKeyFileError(source, number, f"RID {entry.rid.hex().upper()} index "
                                                 f"{entry.index:02X} already on line {seen[where]}")
        seen[where] = number
        entries.append(entry)
    return entries


def ca_keys_of(entries: list[CaKeyEntry], today: dt.date | None = None) -> CaKeys:
    """The terminal's key tables from entries, leaving out keys expired on ``today``."""
    live = [e for e in entries if today is None or e.expiry is None or e.expiry >= today]
    rsa = CaKeyTable.of((e.rid, e.index, RsaPublicKey(e.key, e.exponent))
                        for e in live if e.algorithm == "rsa")
    sm2 = {(e.rid, e.index): e.key for e in live if e.algorithm == "sm2"}
    return CaKeys(rsa=rsa, sm2=sm2)


def load_ca_keys(path: Path | str, today: dt.date | None = None) -> CaKeys:
    """Read and check a CA key file; CaKeyFileError (line 0 for the file itself) if bad."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CaKeyFileError(source, 0, f"cannot read: {exc}") from None
    entries = parse_ca_keys(text, source)
    if not entries:
        raise CaKeyFileError(source, 0, "no CA key in the file")
    return ca_keys_of(entries, today)


@lru_cache(maxsize=8)
def load_ca_keys_cached(path: str) -> CaKeys:
    """``load_ca_keys`` once per process and path (a simulation builds many kernel configs)."""
    return load_ca_keys(path)


def format_line(entry: CaKeyEntry) -> str:
    """The file line of an entry (checksum computed), e.g. to export the shipped test CA."""
    covered = entry.rid + bytes((entry.index,)) + entry.key + entry.exponent
    checksum = hashlib.sha1(covered).hexdigest()  # noqa: S324
    expiry = entry.expiry.strftime("%y%m%d") if entry.expiry else "000000"
    exponent = entry.exponent.hex() if entry.algorithm == "rsa" else "-"
    return (f"{entry.rid.hex()} {entry.index:02x} {expiry} {entry.algorithm} {exponent} "
            f"{entry.key.hex()} sha1 {checksum}")
