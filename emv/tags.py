"""Names and formats of the data objects a contactless tap meets.

Meanings follow EMV Books 3/4 and, where qPBOC/UnionPay differ from the
international kernels, the PBOC 3.0 meaning is the one given (e.g. 9F5D is the
*available offline spending amount* in qPBOC, not Mastercard's application
capabilities; 9F74 is the e-cash issuer authorization code).  ``fmt`` is the EMV
format letter used to pad DOL values and to show values: ``n`` numeric BCD,
``cn`` compressed numeric, ``an``/``ans`` text, ``b`` binary.
"""

from __future__ import annotations

from typing import NamedTuple


class TagInfo(NamedTuple):
    name: str
    fmt: str = "b"


TAGS: dict[int, TagInfo] = {
    0x42: TagInfo("Issuer Identification Number (IIN)", "n"),
    0x4F: TagInfo("Application Identifier (AID) - card"),
    0x50: TagInfo("Application Label", "ans"),
    0x57: TagInfo("Track 2 Equivalent Data"),
    0x5A: TagInfo("Application Primary Account Number (PAN)", "cn"),
    0x5F20: TagInfo("Cardholder Name", "ans"),
    0x5F24: TagInfo("Application Expiration Date (YYMMDD)", "n"),
    0x5F25: TagInfo("Application Effective Date (YYMMDD)", "n"),
    0x5F28: TagInfo("Issuer Country Code", "n"),
    0x5F2A: TagInfo("Transaction Currency Code", "n"),
    0x5F2D: TagInfo("Language Preference", "an"),
    0x5F30: TagInfo("Service Code", "n"),
    0x5F34: TagInfo("PAN Sequence Number", "n"),
    0x5F36: TagInfo("Transaction Currency Exponent", "n"),
    0x61: TagInfo("Application Template"),
    0x6F: TagInfo("File Control Information (FCI) Template"),
    0x70: TagInfo("READ RECORD Response Message Template"),
    0x77: TagInfo("Response Message Template Format 2"),
    0x80: TagInfo("Response Message Template Format 1"),
    0x82: TagInfo("Application Interchange Profile (AIP)"),
    0x83: TagInfo("Command Template"),
    0x84: TagInfo("Dedicated File (DF) Name"),
    0x87: TagInfo("Application Priority Indicator"),
    0x88: TagInfo("Short File Identifier (SFI)"),
    0x8C: TagInfo("Card Risk Management Data Object List 1 (CDOL1)"),
    0x8D: TagInfo("Card Risk Management Data Object List 2 (CDOL2)"),
    0x8E: TagInfo("Cardholder Verification Method (CVM) List"),
    0x8F: TagInfo("Certification Authority Public Key Index"),
    0x90: TagInfo("Issuer Public Key Certificate"),
    0x92: TagInfo("Issuer Public Key Remainder"),
    0x93: TagInfo("Signed Static Application Data"),
    0x94: TagInfo("Application File Locator (AFL)"),
    0x95: TagInfo("Terminal Verification Results (TVR)"),
    0x9A: TagInfo("Transaction Date (YYMMDD)", "n"),
    0x9B: TagInfo("Transaction Status Information"),
    0x9C: TagInfo("Transaction Type", "n"),
    0x9F02: TagInfo("Amount, Authorised (Numeric)", "n"),
    0x9F03: TagInfo("Amount, Other (Numeric)", "n"),
    0x9F07: TagInfo("Application Usage Control"),
    0x9F08: TagInfo("Application Version Number"),
    0x9F0B: TagInfo("Cardholder Name Extended", "ans"),
    0x9F0D: TagInfo("Issuer Action Code - Default"),
    0x9F0E: TagInfo("Issuer Action Code - Denial"),
    0x9F0F: TagInfo("Issuer Action Code - Online"),
    0x9F10: TagInfo("Issuer Application Data (IAD)"),
    0x9F0C: TagInfo("Issuer Identification Number Extended / e-purse public data (T-Union)"),
    0x9F11: TagInfo("Issuer Code Table Index", "n"),
    0x9F12: TagInfo("Application Preferred Name", "ans"),
    0x9F1A: TagInfo("Terminal Country Code", "n"),
    0x9F1F: TagInfo("Track 1 Discretionary Data", "ans"),
    0x9F21: TagInfo("Transaction Time (HHMMSS)", "n"),
    0x9F26: TagInfo("Application Cryptogram (AC)"),
    0x9F27: TagInfo("Cryptogram Information Data (CID)"),
    0x9F32: TagInfo("Issuer Public Key Exponent"),
    0x9F33: TagInfo("Terminal Capabilities"),
    0x9F34: TagInfo("Cardholder Verification Method (CVM) Results"),
    0x9F35: TagInfo("Terminal Type", "n"),
    0x9F36: TagInfo("Application Transaction Counter (ATC)"),
    0x9F37: TagInfo("Unpredictable Number"),
    0x9F38: TagInfo("Processing Options Data Object List (PDOL)"),
    0x9F42: TagInfo("Application Currency Code", "n"),
    0x9F44: TagInfo("Application Currency Exponent", "n"),
    0x9F46: TagInfo("ICC Public Key Certificate"),
    0x9F47: TagInfo("ICC Public Key Exponent"),
    0x9F48: TagInfo("ICC Public Key Remainder"),
    0x9F49: TagInfo("Dynamic Data Authentication Data Object List (DDOL)"),
    0x9F4A: TagInfo("Static Data Authentication Tag List"),
    0x9F4B: TagInfo("Signed Dynamic Application Data (SDAD)"),
    0x9F4C: TagInfo("ICC Dynamic Number"),
    0x9F4D: TagInfo("Log Entry"),
    0x9F4E: TagInfo("Merchant Name and Location", "ans"),
    0x9F51: TagInfo("Application Currency Code (PBOC)", "n"),
    0x9F5D: TagInfo("Available Offline Spending Amount (qPBOC)", "n"),
    0x9F63: TagInfo("Card Product Identification Information (qPBOC)"),
    0x9F66: TagInfo("Terminal Transaction Qualifiers (TTQ)"),
    0x9F69: TagInfo("Card Authentication Related Data (fDDA)"),
    0x9F6C: TagInfo("Card Transaction Qualifiers (CTQ)"),
    0x9F6D: TagInfo("Electronic Cash Reset Threshold (qPBOC)", "n"),
    0x9F74: TagInfo("Electronic Cash Issuer Authorization Code (qPBOC)", "an"),
    0x9F77: TagInfo("Electronic Cash Balance Limit (qPBOC)", "n"),
    0x9F78: TagInfo("Electronic Cash Single Transaction Limit (qPBOC)", "n"),
    0x9F79: TagInfo("Electronic Cash Balance (qPBOC)", "n"),
    0xA5: TagInfo("FCI Proprietary Template"),
    0xBF0C: TagInfo("FCI Issuer Discretionary Data"),
    0xDF60: TagInfo("CAPP Transaction Indicator (PBOC)"),
    0xDF61: TagInfo("Card Transaction Attributes (PBOC)"),
    0xDF69: TagInfo("SM Algorithm Support Indicator (PBOC: 00 RSA/3DES, 01 SM)"),
    # tapsim's own proprietary data objects (holder identity of the social security card).
    0xDF70: TagInfo("tapsim: Social Security Holder Category", "an"),
    0xDF71: TagInfo("tapsim: Holder Birth Date (YYYYMMDD)", "n"),
}


def tag_name(tag: int) -> str:
    """Human name of a tag, or ``"unknown"``."""
    info = TAGS.get(tag)
    return info.name if info else "unknown"


def tag_format(tag: int) -> str:
    """EMV format letter of a tag (``b`` when unknown)."""
    info = TAGS.get(tag)
    return info.fmt if info else "b"
