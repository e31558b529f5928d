"""E-purse keys and MACs, 3DES or SM4: diversification, session keys, MAC1/MAC2, TAC.

Layout followed: the PBOC electronic deposit/purse (ED/EP) of JR/T 0025.2 §5.2, which
JT/T 978 (the T-Union transport card) takes over unchanged for purchase and load.  It is
the layout every public PBOC e-purse walkthrough and card-test script uses, and the
tests check this module against the one published worked example (purchase key
``11223344556677888877665544332211``: session key ``003238ABC57659DD``, MAC1
``F15CAB75``, MAC2 ``56988A13``).

* Card keys (purchase DPK, load DLK, TAC DTK) are diversified from the issuer's master
  keys by the application serial number: D = its rightmost 8 bytes (16 digits);
  3DES: key = 3DES(MK, D) || 3DES(MK, not D); SM4: key = SM4(MK, D || not D).
* Purchase session key SESPK = 3DES(DPK, random 4 || offline serial 2 || terminal serial,
  rightmost 2 bytes) (8 bytes, a single-DES key).  Load session key SESLK = 3DES(DLK,
  random 4 || online serial 2 || 8000).
* MAC = single-DES CBC-MAC under the session key, zero IV, ISO 9797-1 padding method 2,
  left 4 bytes.  TAC = the same MAC under DTK's left half xor right half.
* SM4 form (PBOC 3.0 national-algorithm e-purse, as SM card-test scripts do it; no
  public vector): the same inputs; the 8-byte session-key input is padded to one SM4
  block with method 2 (``80 00..``) and encrypted under the 16-byte card key; MACs are
  SM4 CBC-MAC (zero IV, method 2), left 4 bytes; the TAC key is DTK itself (SM4 keys
  are 16 bytes, there is nothing to fold).

The algorithm identifier the card reports in INITIALIZE is 00 for 3DES and 04 for SM4
(PBOC 3.0's value for SM4).  Key material never appears in an error message.
"""

from __future__ import annotations

import warnings
from typing import Literal

from cryptography.utils import CryptographyDeprecationWarning
from pyemv.mac import pad_iso9797_2
from pyemv.tools import encrypt_tdes_cbc, encrypt_tdes_ecb

from emv.crypto.sm4 import pad_iso9797_m2, sm4_cbc_mac, sm4_ecb_encrypt

# pyemv builds 3DES from cryptography's deprecated location; e-purse 3DES needs exactly that.
warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning, module=r"pyemv\.")

Algorithm = Literal["tdes", "sm4"]
ALGORITHM_IDS: dict[Algorithm, int] = {"tdes": 0x00, "sm4": 0x04}
MAC_SIZE = 4
KEY_SIZE = 16

# TEST ONLY issuer master keys (public in the source tree): what the shipped profiles and the
# test PSAM share.  A real PSAM and a real card never hold these.
TEST_PURCHASE_MASTER_KEY = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
TEST_LOAD_MASTER_KEY = bytes.fromhex("0F1E2D3C4B5A69788796A5B4C3D2E1F0")
TEST_TAC_MASTER_KEY = bytes.fromhex("F0E1D2C3B4A5968778695A4B3C2D1E0F")


class EpurseKeyError(ValueError):
    """A key, card number or MAC input of the wrong size (the message never shows a key)."""


def algorithm_from_id(algorithm_id: int) -> Algorithm | None:
    """The algorithm a card's identifier names, or None for one this code does not know."""
    for name, value in ALGORITHM_IDS.items():
        if value == algorithm_id:
            return name
    return None


def _complement(data: bytes) -> bytes:
    return bytes(b ^ 0xFF for b in data)


def diversification_input(card_number: str) -> bytes:
    """D: the rightmost 16 digits of the application serial number, as 8 bytes BCD."""
    if not (card_number.isascii() and card_number.isdigit() and len(card_number) >= 16):
        raise EpurseKeyError("card number for key diversification must be at least 16 digits")
    return bytes.fromhex(card_number[-16:])


def diversify(master_key: bytes, card_number: str, algorithm: Algorithm) -> bytes:
    """A card's 16-byte key from an issuer master key and its application serial number."""
    if len(master_key) != KEY_SIZE:
        raise EpurseKeyError(f"master key must be {KEY_SIZE} bytes, got {len(master_key)}")
    d = diversification_input(card_number)
    if algorithm == "sm4":
        return sm4_ecb_encrypt(master_key, d + _complement(d))
    return encrypt_tdes_ecb(master_key, d + _complement(d))


def session_key(card_key: bytes, data: bytes, algorithm: Algorithm) -> bytes:
    """A transaction's session key from a card key and its 8-byte input."""
    if len(card_key) != KEY_SIZE or len(data) != 8:
        raise EpurseKeyError("session key needs a 16-byte card key and 8 bytes of input")
    if algorithm == "sm4":
        return sm4_ecb_encrypt(card_key, pad_iso9797_m2(data))
    return encrypt_tdes_ecb(card_key, data)


def mac(key: bytes, data: bytes, algorithm: Algorithm) -> bytes:
    """The 4-byte e-purse MAC: CBC-MAC (zero IV, method 2 padding), left 4 bytes."""
    if algorithm == "sm4":
        if len(key) != KEY_SIZE:
            raise EpurseKeyError("an SM4 MAC key is 16 bytes")
        return sm4_cbc_mac(key, pad_iso9797_m2(data))[:MAC_SIZE]
    if len(key) != 8:
        raise EpurseKeyError("a 3DES-suite e-purse MAC key is a single-DES key of 8 bytes")
    return encrypt_tdes_cbc(key, bytes(8), pad_iso9797_2(data, 8))[-8:][:MAC_SIZE]


def tac_mac_key(tac_key: bytes, algorithm: Algorithm) -> bytes:
    """The key the TAC is computed with: DTK folded to single DES (3DES) or DTK itself (SM4)."""
    if len(tac_key) != KEY_SIZE:
        raise EpurseKeyError(f"TAC key must be {KEY_SIZE} bytes")
    if algorithm == "sm4":
        return tac_key
    return bytes(a ^ b for a, b in zip(tac_key[:8], tac_key[8:], strict=True))


def purchase_session_key(purchase_key: bytes, random: bytes, card_serial: int,
                         terminal_serial: int, algorithm: Algorithm) -> bytes:
    """SESPK from DPK, the card's random number, its offline serial and the terminal serial."""
    data = random + card_serial.to_bytes(2, "big") + (terminal_serial & 0xFFFF).to_bytes(2, "big")
    return session_key(purchase_key, data, algorithm)


def load_session_key(load_key: bytes, random: bytes, online_serial: int,
                     algorithm: Algorithm) -> bytes:
    """SESLK from DLK, the card's random number and its online (load) serial."""
    return session_key(load_key, random + online_serial.to_bytes(2, "big") + b"\x80\x00",
                       algorithm)


def purchase_mac1_input(amount: int, terminal_id: bytes, when: bytes) -> bytes:
    """amount 4 || transaction type 06 || terminal number 6 || date 4 || time 3."""
    return amount.to_bytes(4, "big") + b"\x06" + terminal_id + when


def purchase_tac_input(amount: int, terminal_id: bytes, terminal_serial: int,
                       when: bytes) -> bytes:
    """amount 4 || 06 || terminal number 6 || terminal serial 4 || date 4 || time 3."""
    return (amount.to_bytes(4, "big") + b"\x06" + terminal_id
            + terminal_serial.to_bytes(4, "big") + when)


def load_mac1_input(balance: int, amount: int, terminal_id: bytes) -> bytes:
    """balance before 4 || amount 4 || transaction type 02 || terminal number 6."""
    return balance.to_bytes(4, "big") + amount.to_bytes(4, "big") + b"\x02" + terminal_id


def load_mac2_input(amount: int, terminal_id: bytes, when: bytes) -> bytes:
    """amount 4 || 02 || terminal number 6 || date 4 || time 3."""
    return amount.to_bytes(4, "big") + b"\x02" + terminal_id + when


def load_tac_input(new_balance: int, online_serial: int, amount: int, terminal_id: bytes,
                   when: bytes) -> bytes:
    """new balance 4 || online serial (before the load) 2 || amount 4 || 02 || terminal 6 ||
    date 4 || time 3."""
    return (new_balance.to_bytes(4, "big") + online_serial.to_bytes(2, "big")
            + amount.to_bytes(4, "big") + b"\x02" + terminal_id + when)


def purchase_tac(tac_master_key: bytes, card_number: str, algorithm: Algorithm, amount: int,
                 terminal_id: bytes, terminal_serial: int, when: bytes) -> bytes:
    """The TAC a genuine card gives for a purchase: what the clearing house recomputes."""
    dtk = diversify(tac_master_key, card_number, algorithm)
    return mac(tac_mac_key(dtk, algorithm),
               purchase_tac_input(amount, terminal_id, terminal_serial, when), algorithm)
