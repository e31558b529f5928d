"""Regenerate the TEST ONLY SM2 keys in emv/crypto/testkeys/sm2_*.json.

Usage: .venv/bin/python scripts/make_sm2_test_keys.py
Anything certified with the old keys (test fixtures, card profiles) must be re-made after.
"""

from __future__ import annotations

import json
from pathlib import Path

from emv.crypto.sm2 import sm2_generate_keypair
from emv.crypto.testkeys_sm2 import SM2_TEST_CA_INDEX, SM2_TEST_CA_RID, WARNING

ROLES = {
    "ca": "test payment-system CA: certifies the test issuer key (tag 90)",
    "issuer": "test issuer: certifies the test ICC key (tag 9F46) and signs SSAD (93)",
    "icc": "test ICC (virtual card): signs fDDA dynamic data (9F4B)",
}


def main() -> None:
    folder = Path(__file__).resolve().parent.parent / "emv" / "crypto" / "testkeys"
    folder.mkdir(exist_ok=True)
    for role, purpose in ROLES.items():
        private_key, public_key = sm2_generate_keypair()
        record: dict[str, str] = {"warning": WARNING, "role": role, "purpose": purpose}
        if role == "ca":
            record["rid"] = SM2_TEST_CA_RID.hex().upper()
            record["index"] = f"{SM2_TEST_CA_INDEX:02X}"
        record["private_key"] = private_key.hex().upper()
        record["public_key"] = public_key.hex().upper()
        path = folder / f"sm2_{role}.json"
        path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
