import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emv.pan import PanError, luhn_ok, mask_pan, normalize_pan, pan_token, with_luhn_digit

KEY = b"tapsim-test-token-key-0000000000"


def test_mask_keeps_six_and_four() -> None:
    assert mask_pan("6217000010001234567") == "621700*********4567"


def test_bcd_pan_with_padding() -> None:
    assert normalize_pan(bytes.fromhex("6217000010001234567F")) == "6217000010001234567"


def test_token_is_keyed_and_stable() -> None:
    a = pan_token("6217000010001234567", KEY)
    assert a == pan_token(bytes.fromhex("6217000010001234567F"), KEY)
    assert a != pan_token("6217000010001234567", KEY[::-1])
    assert "1234567" not in a and len(a) == 32


def test_token_is_the_documented_hmac_sha256() -> None:
    # Tokens are stored in journals and databases: the definition (first 16 bytes of
    # HMAC-SHA-256 over the PAN's ASCII digits, in hex) must never drift, whatever computes it.
    # The value below is that definition worked out once with the standard library.
    pan = "6217000010001234567"
    expected = hmac.new(KEY, pan.encode("ascii"), hashlib.sha256).hexdigest()[:32]
    assert pan_token(pan, KEY) == expected == "ffb5baed22061a78a1d078bae9ec317b"


def test_bad_pan_error_does_not_echo_it() -> None:
    with pytest.raises(PanError) as info:
        normalize_pan("62170000100012345678901")
    assert "62170000" not in str(info.value)


def test_luhn() -> None:
    assert luhn_ok("4111111111111111")
    assert not luhn_ok("4111111111111112")


@given(st.text(alphabet="0123456789", min_size=12, max_size=19))
def test_mask_never_reveals_middle(pan: str) -> None:
    masked = mask_pan(pan)
    assert len(masked) == len(pan)
    assert masked[:6] == pan[:6] and masked[-4:] == pan[-4:]
    assert set(masked[6:-4]) <= {"*"}


@given(st.text(alphabet="0123456789", min_size=11, max_size=18))
def test_with_luhn_digit_makes_valid_pans(body: str) -> None:
    pan = with_luhn_digit(body)
    assert pan[:-1] == body and luhn_ok(pan)
    assert not luhn_ok(body + str((int(pan[-1]) + 1) % 10))
