"""Count the argon2 verifications a piece of code really runs.

`PasswordHashing` verifies through argon2-cffi's `PasswordHasher.verify`; wrapping that
method (for one test, with `monkeypatch`) records each call and how argon2 answered it,
whichever thread of the hashing pool runs it. Nothing else is replaced: the real
verification still runs and costs what it costs.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import pytest
from argon2 import PasswordHasher
from argon2.exceptions import VerifyMismatchError


@dataclass
class Verification:
    password_hash: str
    outcome: str  # "match", "mismatch", or the name of the exception argon2 raised


@dataclass
class Argon2Calls:
    calls: list[Verification] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, password_hash: str | bytes, outcome: str) -> None:
        text = password_hash.decode() if isinstance(password_hash, bytes) else password_hash
        with self._lock:
            self.calls.append(Verification(text, outcome))

    def take(self) -> list[Verification]:
        """The verifications since the last `take`."""
        with self._lock:
            taken, self.calls = self.calls, []
        return taken


def count_argon2_verifications(monkeypatch: pytest.MonkeyPatch) -> Argon2Calls:
    """Record every `PasswordHasher.verify` from now until the test ends."""
    calls = Argon2Calls()
    real_verify = PasswordHasher.verify

    def counting_verify(
        self: PasswordHasher, password_hash: str | bytes, password: str | bytes
    ) -> bool:
        try:
            matched = real_verify(self, password_hash, password)
        except VerifyMismatchError:
            calls.record(password_hash, "mismatch")
            raise
        except Exception as exc:
            calls.record(password_hash, type(exc).__name__)
            raise
        calls.record(password_hash, "match")
        return matched

    monkeypatch.setattr(PasswordHasher, "verify", counting_verify)
    return calls
