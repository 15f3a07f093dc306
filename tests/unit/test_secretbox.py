"""SecretBox: TOTP secrets encrypted at rest, key rotation, legacy plain values."""

from __future__ import annotations

import pyotp
import pytest
from cryptography.fernet import Fernet

from brokerx_core.auth.secretbox import (
    DEV_TOTP_ENCRYPTION_KEY,
    SecretBox,
    UndecryptableSecret,
    is_legacy_plain,
    split_keys,
)

SECRET = pyotp.random_base32()
OLD_KEY = Fernet.generate_key().decode()
NEW_KEY = Fernet.generate_key().decode()


def test_round_trip_hides_the_secret() -> None:
    box = SecretBox([NEW_KEY])
    token = box.encrypt(SECRET)
    assert SECRET not in token
    assert token.startswith("gAAAAA")
    assert not is_legacy_plain(token)
    assert box.decrypt(token) == SECRET
    # Fresh randomness every time: equal secrets do not give equal tokens.
    assert box.encrypt(SECRET) != token
    assert box.is_current(token)


def test_a_token_fits_the_widened_column_and_is_ascii() -> None:
    token = SecretBox([NEW_KEY]).encrypt(SECRET)
    assert token.isascii()
    assert len(token) <= 255


def test_first_key_encrypts_and_every_key_decrypts() -> None:
    old_token = SecretBox([OLD_KEY]).encrypt(SECRET)
    rotated = SecretBox([NEW_KEY, OLD_KEY])
    assert rotated.decrypt(old_token) == SECRET
    assert not rotated.is_current(old_token)
    new_token = rotated.encrypt(SECRET)
    assert rotated.is_current(new_token)
    # Encrypted under the first key: the new key alone decrypts it, the old one cannot.
    assert SecretBox([NEW_KEY]).decrypt(new_token) == SECRET
    with pytest.raises(UndecryptableSecret):
        SecretBox([OLD_KEY]).decrypt(new_token)


def test_reseal_moves_a_token_of_an_old_key_under_the_first_key() -> None:
    old_token = SecretBox([OLD_KEY]).encrypt(SECRET)
    resealed = SecretBox([NEW_KEY, OLD_KEY]).reseal(old_token)
    assert SecretBox([NEW_KEY]).decrypt(resealed) == SECRET
    assert SecretBox([NEW_KEY]).is_current(resealed)


def test_a_token_no_key_decrypts_is_refused() -> None:
    token = SecretBox([OLD_KEY]).encrypt(SECRET)
    box = SecretBox([NEW_KEY])
    with pytest.raises(UndecryptableSecret):
        box.decrypt(token)
    with pytest.raises(UndecryptableSecret):
        box.reseal(token)
    assert not box.is_current(token)
    # A tampered token, and a value that is neither a token nor base32, are refused too.
    tampered = token[:-6] + ("AAAAAA" if not token.endswith("AAAAAA") else "BBBBBB")
    for value in (tampered, "not a secret!", "gAAAAA", "é"):
        with pytest.raises(UndecryptableSecret):
            SecretBox([OLD_KEY]).decrypt(value)


def test_a_legacy_plain_secret_is_read_as_it_is_and_resealed() -> None:
    box = SecretBox([NEW_KEY])
    assert is_legacy_plain(SECRET)
    assert box.decrypt(SECRET) == SECRET
    assert not box.is_current(SECRET)
    sealed = box.reseal(SECRET)
    assert sealed != SECRET
    assert SECRET not in sealed
    assert box.decrypt(sealed) == SECRET


def test_split_keys_takes_commas_and_whitespace() -> None:
    assert split_keys(f" {NEW_KEY},{OLD_KEY}\n") == [NEW_KEY, OLD_KEY]
    assert split_keys(f"{NEW_KEY}\n{OLD_KEY}\n") == [NEW_KEY, OLD_KEY]
    assert split_keys(f"{NEW_KEY} ,\t {OLD_KEY}") == [NEW_KEY, OLD_KEY]
    assert (
        SecretBox.from_setting(DEV_TOTP_ENCRYPTION_KEY).decrypt(
            SecretBox([DEV_TOTP_ENCRYPTION_KEY]).encrypt(SECRET)
        )
        == SECRET
    )


@pytest.mark.parametrize(
    ("value", "position"),
    [
        ("too-short", "key 1 of 1"),
        (f"{NEW_KEY},{NEW_KEY[:-2]}", "key 2 of 2"),
        (f"{NEW_KEY} not*base64*at*all*not*base64*at*all*not*base64*", "key 2 of 2"),
    ],
)
def test_split_keys_names_the_bad_key_without_echoing_it(value: str, position: str) -> None:
    with pytest.raises(ValueError, match=position) as refused:
        split_keys(value)
    assert NEW_KEY[:20] not in str(refused.value)


@pytest.mark.parametrize("value", ["", "  ", " , \n"])
def test_split_keys_refuses_an_empty_list(value: str) -> None:
    with pytest.raises(ValueError, match="no key given"):
        split_keys(value)
