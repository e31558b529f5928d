"""Crypto suites of the card and the kernel.

Two suites live side by side, chosen per card profile:

* international: RSA certificates and fDDA (``rsa_certs``), 3DES application
  cryptograms (``tdes``);
* national (PBOC 3.0 / GM/T): SM2 certificates and fDDA, SM3, SM4 application
  cryptograms.

``cryptogram.scheme(name)`` gives the application-cryptogram scheme of either
suite behind one protocol, so the card, the kernel and the issuer never branch on
the suite themselves.
"""

from emv.crypto.sm2 import sm2_sign as sm2_sign
from emv.crypto.sm2 import sm2_verify as sm2_verify
