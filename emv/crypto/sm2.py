"""SM2 digital signatures (GM/T 0003.2, GB/T 32918.2) on the recommended 256-bit curve.

Why this backend: SM2 verification runs on every SM tap, and ``cryptography`` has no SM2.
Measured on this project's machine: pure-Python ``gmssl`` ~10.3 ms per verify; ``fastecdsa``
4 (now Rust; on a custom curve it uses generic constant-time ladders) ~2.2 ms for the
s*G + t*P alone; ``gmpy2`` (GMP integers) with Jacobian coordinates and interleaved wNAF
~0.5 ms for the whole verify.  So the curve arithmetic is a few dozen lines over ``gmpy2``:
GMP does the multi-precision work in C, the Python layer only sequences ~300 point operations.
Odd multiples of G are precomputed at import, those of a public key cached (public data only:
CA and issuer keys recur on every tap).  Keys that verify many signatures (the CA's and the
issuers', see ``emv.oda``) can be given a fixed-base comb (:func:`sm2_precompute`): s*G + t*P is
then ~64 mixed additions and no doubling, faster than OpenSSL's C; G's comb also serves k*G
for signing.  Keys met once (a card's ICC key) are verified by the system's libcrypto when it
has SM2 (``emv.crypto.sm2_openssl``, about twice as fast as the doublings here), else here.

Signing is not hardened against timing side channels (variable-time windows over GMP): this is a
simulator whose signing keys are test keys on virtual cards.  Do not sign with real keys here.

Input policy (decided for the kernel's sake):
- a *signature* that is not 64 bytes, or whose r or s is outside [1, n-1], is just a bad
  signature: :func:`sm2_verify` returns ``False`` (it came from the card, untrusted);
- a structurally invalid *key* (wrong length, bad prefix, point not on the curve, private key
  outside [1, n-2]) or a user ID longer than 8191 bytes is a caller error:
  :class:`~emv.crypto.errors.CryptoInputError`.  Keys recovered from certificates are checked
  by ``sm2_certs`` before they get here, so the kernel never sees this on card data.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from functools import lru_cache

import gmpy2

from emv.crypto import sm2_openssl
from emv.crypto.errors import CryptoInputError
from emv.crypto.sm3 import sm3

DEFAULT_USER_ID = b"1234567812345678"
PRIVATE_KEY_SIZE = 32
PUBLIC_KEY_SIZE = 64
SIGNATURE_SIZE = 64

# Recommended curve parameters (GM/T 0003.5, GB/T 32918.5): y^2 = x^3 + ax + b over F_p, a = p - 3.
P = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF
A = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC
B = 0x28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93
N = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123
GX = 0x32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7
GY = 0xBC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0

_P = gmpy2.mpz(P)
_B = gmpy2.mpz(B)
_ZERO = gmpy2.mpz(0)
_ONE = gmpy2.mpz(1)
_CURVE_BYTES = b"".join(v.to_bytes(32, "big") for v in (A, B, GX, GY))

_G_WINDOW = 7  # 32 precomputed multiples of G, built once
_KEY_WINDOW = 5  # 8 per public key: cheaper to build per new key, barely slower per tap

Affine = tuple[gmpy2.mpz, gmpy2.mpz]
Jacobian = tuple[gmpy2.mpz, gmpy2.mpz, gmpy2.mpz]


# --- field and point arithmetic (Jacobian coordinates, a = -3) -------------------------------


def _double(x: gmpy2.mpz, y: gmpy2.mpz, z: gmpy2.mpz) -> Jacobian:
    """2P, "dbl-2001-b" (a = -3); the point at infinity (z = 0) doubles to itself."""
    delta = z * z % _P
    gamma = y * y % _P
    beta = x * gamma % _P
    alpha = 3 * (x - delta) * (x + delta) % _P
    x3 = (alpha * alpha - 8 * beta) % _P
    z3 = ((y + z) ** 2 - gamma - delta) % _P
    y3 = (alpha * (4 * beta - x3) - 8 * gamma * gamma) % _P
    return x3, y3, z3


def _add_affine(
    x1: gmpy2.mpz, y1: gmpy2.mpz, z1: gmpy2.mpz, x2: gmpy2.mpz, y2: gmpy2.mpz
) -> Jacobian:
    """P + Q with Q affine ("madd"), handling infinity, P = Q and P = -Q."""
    if not z1:
        return x2, y2, _ONE
    z1z1 = z1 * z1 % _P
    h = (x2 * z1z1 - x1) % _P
    r = (y2 * z1 * z1z1 - y1) % _P
    if not h:
        if not r:
            return _double(x1, y1, z1)
        return _ZERO, _ONE, _ZERO
    hh = h * h % _P
    hhh = h * hh % _P
    v = x1 * hh % _P
    x3 = (r * r - hhh - 2 * v) % _P
    y3 = (r * (v - x3) - y1 * hhh) % _P
    return x3, y3, z1 * h % _P


def _add(p: Jacobian, q: Jacobian) -> Jacobian:
    """P + Q, both Jacobian ("add-2007-bl" without the shortcuts); used only for precomputation."""
    x1, y1, z1 = p
    x2, y2, z2 = q
    if not z1:
        return x2, y2, z2
    if not z2:
        return x1, y1, z1
    z1z1 = z1 * z1 % _P
    z2z2 = z2 * z2 % _P
    u1 = x1 * z2z2 % _P
    s1 = y1 * z2 * z2z2 % _P
    h = (x2 * z1z1 - u1) % _P
    r = (y2 * z1 * z1z1 - s1) % _P
    if not h:
        if not r:
            return _double(x1, y1, z1)
        return _ZERO, _ONE, _ZERO
    hh = h * h % _P
    hhh = h * hh % _P
    v = u1 * hh % _P
    x3 = (r * r - hhh - 2 * v) % _P
    y3 = (r * (v - x3) - s1 * hhh) % _P
    return x3, y3, z1 * z2 * h % _P


def _to_affine(x: gmpy2.mpz, y: gmpy2.mpz, z: gmpy2.mpz) -> Affine | None:
    if not z:
        return None
    zi = gmpy2.invert(z, _P)
    zi2 = zi * zi % _P
    return x * zi2 % _P, y * zi2 * zi % _P


def _odd_multiples(point: Affine, window: int) -> list[Affine]:
    """[P, 3P, 5P, ..., (2^(w-1) - 1)P] in affine form, for mixed additions."""
    x, y = point
    twice = _double(x, y, _ONE)
    current: Jacobian = (x, y, _ONE)
    out = [point]
    for _ in range((1 << (window - 2)) - 1):
        current = _add(current, twice)
        affine = _to_affine(*current)
        if affine is None:  # cannot happen for a point of prime order n > table size
            raise CryptoInputError("public key has small order")
        out.append(affine)
    return out


def _wnaf(k: int, window: int) -> list[int]:
    """Width-w non-adjacent form of k, least significant digit first."""
    digits: list[int] = []
    full = 1 << window
    half = full >> 1
    mask = full - 1
    while k:
        if k & 1:
            d = k & mask
            if d >= half:
                d -= full
            k -= d
            digits.append(d)
            k >>= 1
        else:
            zeros = (k & -k).bit_length() - 1
            digits.extend([0] * zeros)
            k >>= zeros
    return digits


_G_TABLE = _odd_multiples((gmpy2.mpz(GX), gmpy2.mpz(GY)), _G_WINDOW)


def _mul_add(s: int, t: int, key_table: list[Affine]) -> Affine | None:
    """s*G + t*Q (Q given by its odd-multiple table), or None for the point at infinity.

    Interleaved wNAF: both scalars share one chain of ~256 doublings (Shamir's trick).
    """
    ds = _wnaf(s, _G_WINDOW)
    dt = _wnaf(t, _KEY_WINDOW)
    length = max(len(ds), len(dt))
    ds += [0] * (length - len(ds))
    dt += [0] * (length - len(dt))
    g_table = _G_TABLE
    x, y, z = _ZERO, _ONE, _ZERO
    for i in range(length - 1, -1, -1):
        if z:
            x, y, z = _double(x, y, z)
        d = ds[i]
        if d > 0:
            px, py = g_table[d >> 1]
            x, y, z = _add_affine(x, y, z, px, py)
        elif d < 0:
            px, py = g_table[(-d) >> 1]
            x, y, z = _add_affine(x, y, z, px, _P - py)
        d = dt[i]
        if d:
            px, py = key_table[abs(d) >> 1]
            x, y, z = _add_affine(x, y, z, px, py if d > 0 else _P - py)
    return _to_affine(x, y, z)


# --- fixed-base combs: keys that recur (G, the CA's and issuers' keys) -----------------------

_COMB_BITS = 8
_COMB_ROWS = 32  # 32 rows of 8 bits cover a 256-bit scalar
_COMB_KEYS = 16  # keys with a comb kept at once (about 1 MB each)


def _batch_affine(points: list[Jacobian]) -> list[Affine]:
    """Jacobian points (none at infinity) to affine with one inversion (Montgomery's trick)."""
    prefix = [_ONE]
    for _, _, z in points:
        prefix.append(prefix[-1] * z % _P)
    inverse = gmpy2.invert(prefix[-1], _P)
    out: list[Affine] = [(_ZERO, _ZERO)] * len(points)
    for i in range(len(points) - 1, -1, -1):
        x, y, z = points[i]
        zi = inverse * prefix[i] % _P
        inverse = inverse * z % _P
        zi2 = zi * zi % _P
        out[i] = (x * zi2 % _P, y * zi2 * zi % _P)
    return out


def _comb(point: Affine) -> list[list[Affine]]:
    """j * 256^i * P for i < 32 and j in 1..255: P times any 256-bit scalar is then at most 32
    mixed additions and no doubling.  Every j * 256^i is below n, so no entry is infinity."""
    rows: list[list[Affine]] = []
    base = point
    for _ in range(_COMB_ROWS):
        bx, by = base
        current: Jacobian = (bx, by, _ONE)
        row = [current]
        for _ in range((1 << _COMB_BITS) - 1):
            current = _add_affine(*current, bx, by)
            row.append(current)
        affine = _batch_affine(row)
        rows.append(affine[:-1])
        base = affine[-1]  # 256^(i+1) * P
    return rows


@lru_cache(maxsize=1)
def _g_comb() -> list[list[Affine]]:
    """G's comb, built on first use (some tens of ms) so importing the module stays cheap."""
    return _comb((gmpy2.mpz(GX), gmpy2.mpz(GY)))


_KEY_COMBS: OrderedDict[bytes, list[list[Affine]]] = OrderedDict()


def sm2_precompute(public_key: bytes) -> None:
    """Keep a fixed-base comb for a key that will verify many signatures (a CA's or an issuer's):
    its verifications then cost about half.  Building one takes some tens of ms; the last
    16 keys keep theirs.  Public data only."""
    key = normalize_public_key(public_key)
    if key in _KEY_COMBS:
        _KEY_COMBS.move_to_end(key)
        return
    x, y = _key_table(key)[0]
    _KEY_COMBS[key] = _comb((x, y))
    while len(_KEY_COMBS) > _COMB_KEYS:
        _KEY_COMBS.popitem(last=False)


def _comb_mul(k: int, rows: list[list[Affine]], acc: Jacobian) -> Jacobian:
    x, y, z = acc
    for i, digit in enumerate(k.to_bytes(32, "little")):
        if digit:
            px, py = rows[i][digit - 1]
            x, y, z = _add_affine(x, y, z, px, py)
    return x, y, z


def _base_mul(k: int) -> Affine | None:
    """k*G over G's comb (signing and key generation)."""
    return _to_affine(*_comb_mul(k % N, _g_comb(), (_ZERO, _ONE, _ZERO)))


# --- keys --------------------------------------------------------------------------------


def _private_scalar(private_key: bytes) -> int:
    if len(private_key) != PRIVATE_KEY_SIZE:
        raise CryptoInputError(f"SM2 private key must be 32 bytes (got {len(private_key)})")
    d = int.from_bytes(private_key, "big")
    if not 1 <= d <= N - 2:
        raise CryptoInputError("SM2 private key is outside [1, n-2]")
    return d


def normalize_public_key(public_key: bytes) -> bytes:
    """The 64-byte X||Y form of a public key given as X||Y or 04||X||Y, checked on the curve."""
    if len(public_key) == PUBLIC_KEY_SIZE + 1:
        if public_key[0] != 0x04:
            raise CryptoInputError(
                f"SM2 public key of 65 bytes must start 04 (got {public_key[0]:02X})"
            )
        public_key = public_key[1:]
    elif len(public_key) != PUBLIC_KEY_SIZE:
        raise CryptoInputError(f"SM2 public key must be 64 or 65 bytes (got {len(public_key)})")
    _key_table(bytes(public_key))
    return bytes(public_key)


@lru_cache(maxsize=512)
def _key_table(public_key: bytes) -> list[Affine]:
    """Validated point and its odd multiples, cached per key (public data only)."""
    x = gmpy2.mpz(int.from_bytes(public_key[:32], "big"))
    y = gmpy2.mpz(int.from_bytes(public_key[32:], "big"))
    if x >= _P or y >= _P or (y * y - (x * x * x - 3 * x + _B)) % _P:
        raise CryptoInputError("SM2 public key is not a point on the curve")
    return _odd_multiples((x, y), _KEY_WINDOW)


def _encode_point(point: Affine | None) -> bytes:
    if point is None:  # d in [1, n-2] never gives infinity
        raise CryptoInputError("point at infinity has no encoding")
    return int(point[0]).to_bytes(32, "big") + int(point[1]).to_bytes(32, "big")


def sm2_public_key(private_key: bytes) -> bytes:
    """The 64-byte public key X||Y of a 32-byte private key."""
    return _encode_point(_base_mul(_private_scalar(private_key)))


def sm2_generate_keypair() -> tuple[bytes, bytes]:
    """A fresh (private 32 bytes, public 64 bytes) key pair from ``secrets``."""
    d = secrets.randbelow(N - 2) + 1
    private_key = d.to_bytes(PRIVATE_KEY_SIZE, "big")
    return private_key, sm2_public_key(private_key)


def sm2_za(public_key: bytes, user_id: bytes = DEFAULT_USER_ID) -> bytes:
    """Z_A = SM3(ENTL || ID || a || b || xG || yG || xA || yA), binding ID and key to the hash."""
    key = normalize_public_key(public_key)
    bits = len(user_id) * 8
    if bits > 0xFFFF:
        raise CryptoInputError(f"SM2 user ID must be at most 8191 bytes (got {len(user_id)})")
    return sm3(bits.to_bytes(2, "big") + user_id + _CURVE_BYTES + key)


def _digest(public_key: bytes, message: bytes, user_id: bytes) -> int:
    return int.from_bytes(sm3(_za(normalize_public_key(public_key), user_id) + message), "big")


@lru_cache(maxsize=512)
def _za(key: bytes, user_id: bytes) -> bytes:
    """Z_A per (checked key, ID): the same CA, issuer and card keys come back tap after tap."""
    return sm2_za(key, user_id)


# --- signatures ----------------------------------------------------------------------------


def sm2_sign(
    private_key: bytes,
    message: bytes,
    user_id: bytes = DEFAULT_USER_ID,
    *,
    k: int | None = None,
) -> bytes:
    """Sign ``message`` (Z_A prepended, SM3); returns r||s, 64 bytes.

    ``k`` is for tests only (reproducing the standard's annex example); without it a fresh
    secret nonce comes from ``secrets`` for every signature.
    """
    d = _private_scalar(private_key)
    e = _digest(sm2_public_key(private_key), message, user_id)
    if k is not None and not 1 <= k < N:
        raise CryptoInputError("SM2 nonce k is outside [1, n-1]")
    inverse = int(gmpy2.invert(1 + d, N))
    while True:
        nonce = k if k is not None else secrets.randbelow(N - 1) + 1
        point = _base_mul(nonce)
        assert point is not None  # nonce in [1, n-1]
        r = (e + int(point[0])) % N
        s = inverse * (nonce - r * d) % N
        if r and r + nonce != N and s:
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")
        if k is not None:
            raise CryptoInputError("this nonce k gives a degenerate signature; pick another")


def sm2_verify(
    public_key: bytes,
    message: bytes,
    signature: bytes,
    user_id: bytes = DEFAULT_USER_ID,
) -> bool:
    """True when ``signature`` (r||s) is ``public_key``'s SM2 signature of ``message``."""
    key = normalize_public_key(public_key)
    if len(signature) != SIGNATURE_SIZE:
        return False
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    if not (1 <= r < N and 1 <= s < N):
        return False
    t = (r + s) % N
    if not t:
        return False
    if len(user_id) * 8 > 0xFFFF:
        raise CryptoInputError(f"SM2 user ID must be at most 8191 bytes (got {len(user_id)})")
    comb = _KEY_COMBS.get(key)
    if comb is None:  # a key met once: OpenSSL's C does it in half the time, where it is
        verdict = sm2_openssl.verify(key, message, signature, user_id)
        if verdict is not None:
            return verdict
    return _verify_python(key, message, r, s, t, user_id)


def _verify_python(key: bytes, message: bytes, r: int, s: int, t: int, user_id: bytes) -> bool:
    """The verification equation in this module's own arithmetic (r, s, t already checked)."""
    e = int.from_bytes(sm3(_za(key, user_id) + message), "big")
    comb = _KEY_COMBS.get(key)
    if comb is not None:  # both scalars over fixed-base combs: ~64 additions, no doubling
        point = _to_affine(*_comb_mul(t, comb, _comb_mul(s, _g_comb(), (_ZERO, _ONE, _ZERO))))
    else:
        point = _mul_add(s, t, _key_table(key))
    if point is None:
        return False
    return (e + int(point[0])) % N == r
