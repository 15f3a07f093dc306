"""Encryption at rest of the clients' TOTP secrets (Fernet: AES-128-CBC + HMAC-SHA256).

`TOTP_ENCRYPTION_KEYS` holds one or more Fernet keys separated by commas or whitespace.
The first key encrypts; every key decrypts, so a key is rotated by putting the new one
first, re-encrypting (`python -m brokerx_api.auth.rekey`), then dropping the old one.

A value written before encryption existed is a plain base32 secret (`[A-Z2-7]`, as
`pyotp.random_base32` draws them). It cannot be mistaken for a Fernet token (url-safe
base64 that always starts with `gAAAAA`), so it is read as it is until `rekey`
encrypts it (docs/decisions.md).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

# Fixed development key (base64 of b"brokerx-dev-totp-key-not-secret!"): `make run` and
# the tests work with no configuration; production refuses it (ApiSettings).
DEV_TOTP_ENCRYPTION_KEY = "YnJva2VyeC1kZXYtdG90cC1rZXktbm90LXNlY3JldCE="

_SEPARATORS = re.compile(r"[\s,]+")
_LEGACY_PLAIN = re.compile(r"[A-Z2-7]+=*")


class UndecryptableSecret(Exception):
    """A stored value that none of the configured keys decrypts (wrong key or tampering)."""


def split_keys(value: str) -> list[str]:
    """The keys of a `TOTP_ENCRYPTION_KEYS` value, checked; ValueError names a bad one.

    The message never contains the value itself: it ends up in start-up logs.
    """
    keys = [key for key in _SEPARATORS.split(value.strip()) if key]
    if not keys:
        raise ValueError("no key given: one or more Fernet keys separated by commas")
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key)
        except ValueError:  # binascii.Error (not base64) is a ValueError too
            raise ValueError(
                f"key {position} of {len(keys)} is not a Fernet key (32 random bytes in"
                " url-safe base64, 44 characters)"
            ) from None
    return keys


def is_legacy_plain(stored: str) -> bool:
    """True for a secret stored before encryption: plain base32, not a Fernet token."""
    return _LEGACY_PLAIN.fullmatch(stored) is not None


class SecretBox:
    """Encrypts with the first key, decrypts with any; reads legacy plain values."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("SecretBox needs at least one key")
        self._primary = Fernet(keys[0])
        self._all = MultiFernet([Fernet(key) for key in keys])

    @classmethod
    def from_setting(cls, value: str) -> SecretBox:
        """The box of a `TOTP_ENCRYPTION_KEYS` value (keys separated by commas/whitespace)."""
        return cls(split_keys(value))

    def encrypt(self, secret: str) -> str:
        """A Fernet token of `secret` under the first key (ASCII, ~140 characters)."""
        return self._all.encrypt(secret.encode()).decode("ascii")

    def decrypt(self, stored: str) -> str:
        """The secret of a stored value: a token under any key, or a legacy plain value."""
        if is_legacy_plain(stored):
            return stored
        try:
            return self._all.decrypt(stored.encode("ascii")).decode()
        except (InvalidToken, UnicodeError) as exc:
            raise UndecryptableSecret("no configured key decrypts this value") from exc

    def is_current(self, stored: str) -> bool:
        """True when `stored` is a token under the first key (nothing for rekey to do)."""
        if is_legacy_plain(stored):
            return False
        try:
            self._primary.decrypt(stored.encode("ascii"))
        except (InvalidToken, UnicodeError):
            return False
        return True

    def reseal(self, stored: str) -> str:
        """`stored` encrypted under the first key: a legacy value or a token of an older key."""
        if is_legacy_plain(stored):
            return self.encrypt(stored)
        try:
            return self._all.rotate(stored.encode("ascii")).decode("ascii")
        except (InvalidToken, UnicodeError) as exc:
            raise UndecryptableSecret("no configured key decrypts this value") from exc
