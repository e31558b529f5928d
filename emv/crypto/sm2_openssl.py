"""SM2 verification by the system's OpenSSL 3 libcrypto (C), through ctypes, when it has SM2.

Why: the pure-Python curve arithmetic (``emv.crypto.sm2``, GMP underneath) needs 256 point
doublings for a key it meets once, such as the card's ICC key that checks each tap's SDAD:
about 0.8 ms, twice OpenSSL's C.  Keys that recur get a fixed-base comb there and beat it; the
rest come here.  libcrypto is on every Debian machine (``libssl3``); where it is missing, or
built without SM2, :func:`available` is False and ``emv.crypto.sm2`` keeps its own path.  Both
are tested equal on the same signatures.

The key is given to OpenSSL as a DER SubjectPublicKeyInfo on the SM2 curve (OpenSSL 3 makes
that an SM2 key), the ID through ``EVP_PKEY_CTX_set1_id`` (Z_A), the digest SM3, and r || s
as the DER ECDSA-Sig-Value it expects.  Parsed keys are kept (freed when pushed out).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections import OrderedDict
from typing import Any

# SEQUENCE { SEQUENCE { OID id-ecPublicKey, OID sm2 (1.2.156.10197.1.301) }, BIT STRING 04 X Y }
_SPKI_PREFIX = bytes.fromhex("3059301306072A8648CE3D020106082A811CCF5501822D034200" "04")
_KEEP = 256

_lib: Any = None
_keys: OrderedDict[bytes, int] = OrderedDict()
# One verification at a time: a key pushed out of the cache is freed, and must not be in use by
# another thread (ctypes lets go of the GIL during each call).
_lock = threading.Lock()


def _load() -> Any:
    global _lib  # noqa: PLW0603 - one handle per process, opened on first use
    if _lib is not None:
        return _lib or None
    _lib = False
    path = ctypes.util.find_library("crypto")
    if path is None:
        return None
    try:
        lib = ctypes.CDLL(path)
        vp, cp, sz = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t
        lib.d2i_PUBKEY.restype = vp
        lib.d2i_PUBKEY.argtypes = [vp, ctypes.POINTER(cp), ctypes.c_long]
        lib.EVP_PKEY_free.argtypes = [vp]
        lib.EVP_MD_CTX_new.restype = vp
        lib.EVP_MD_CTX_free.argtypes = [vp]
        lib.EVP_PKEY_CTX_new.restype = vp
        lib.EVP_PKEY_CTX_new.argtypes = [vp, vp]
        lib.EVP_PKEY_CTX_free.argtypes = [vp]
        lib.EVP_PKEY_CTX_set1_id.argtypes = [vp, cp, ctypes.c_int]
        lib.EVP_MD_CTX_set_pkey_ctx.argtypes = [vp, vp]
        lib.EVP_sm3.restype = vp
        lib.EVP_DigestVerifyInit.argtypes = [vp, vp, vp, vp, vp]
        lib.EVP_DigestVerify.argtypes = [vp, cp, sz, cp, sz]
        lib.ERR_clear_error.argtypes = []
        if not lib.EVP_sm3():
            return None
        _lib = lib
    except (OSError, AttributeError):
        return None
    return _lib


def _pkey(lib: Any, key: bytes) -> int | None:
    pkey = _keys.get(key)
    if pkey is not None:
        _keys.move_to_end(key)
        return pkey
    der = _SPKI_PREFIX + key
    ptr = ctypes.c_char_p(der)
    made = lib.d2i_PUBKEY(None, ctypes.byref(ptr), len(der))
    if not made:
        lib.ERR_clear_error()
        return None
    _keys[key] = made
    while len(_keys) > _KEEP:
        lib.EVP_PKEY_free(_keys.popitem(last=False)[1])
    return int(made)


def _der_integer(value: bytes) -> bytes:
    value = value.lstrip(b"\x00") or b"\x00"
    if value[0] & 0x80:
        value = b"\x00" + value
    return b"\x02" + bytes((len(value),)) + value


def _der_signature(signature: bytes) -> bytes:
    body = _der_integer(signature[:32]) + _der_integer(signature[32:])
    return b"\x30" + bytes((len(body),)) + body


def available() -> bool:
    """Whether libcrypto with SM2 and SM3 could be loaded."""
    return _load() is not None


def verify(key: bytes, message: bytes, signature: bytes, user_id: bytes) -> bool | None:
    """OpenSSL's verdict on a checked 64-byte key (X || Y) and a 64-byte r || s, or None when
    OpenSSL cannot be used (no libcrypto, a key it refuses): the caller then verifies itself."""
    with _lock:
        lib = _load()
        if lib is None:
            return None
        return _verify_locked(lib, key, message, signature, user_id)


def _verify_locked(lib: Any, key: bytes, message: bytes, signature: bytes,
                   user_id: bytes) -> bool | None:
    pkey = _pkey(lib, key)
    if pkey is None:
        return None
    mctx = lib.EVP_MD_CTX_new()
    pctx = lib.EVP_PKEY_CTX_new(pkey, None)
    try:
        if not mctx or not pctx or lib.EVP_PKEY_CTX_set1_id(pctx, user_id, len(user_id)) != 1:
            return None
        lib.EVP_MD_CTX_set_pkey_ctx(mctx, pctx)
        if lib.EVP_DigestVerifyInit(mctx, None, lib.EVP_sm3(), None, pkey) != 1:
            return None
        der = _der_signature(signature)
        return bool(lib.EVP_DigestVerify(mctx, der, len(der), message, len(message)) == 1)
    finally:
        lib.ERR_clear_error()
        if mctx:
            lib.EVP_MD_CTX_free(mctx)  # frees the attached pkey ctx as well
        elif pctx:
            lib.EVP_PKEY_CTX_free(pctx)
