"""Password hashing (argon2id) and the sign-up password policy.

Hashing runs in a small dedicated thread pool: one argon2id hash costs tens of
milliseconds of CPU and ~19 MiB of memory, so it must neither block the event loop
nor run unboundedly in parallel (a login burst would otherwise exhaust memory).
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# OWASP Password Storage Cheat Sheet, argon2id: m = 19 MiB, t = 2, p = 1 at least.
OWASP_MIN_MEMORY_KIB = 19 * 1024
OWASP_MIN_TIME_COST = 2

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 128

_HASH_THREADS = max(2, min(8, os.cpu_count() or 2))
_executor: ThreadPoolExecutor | None = None


def _hash_executor() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(_HASH_THREADS, thread_name_prefix="argon2")
    return _executor


@dataclass(frozen=True, slots=True)
class HashParameters:
    """argon2id cost parameters; the defaults are OWASP's recommended minimum."""

    memory_kib: int = OWASP_MIN_MEMORY_KIB
    time_cost: int = OWASP_MIN_TIME_COST
    parallelism: int = 1

    @property
    def meets_owasp_minimum(self) -> bool:
        """True when memory and iterations are at least OWASP's argon2id minimum."""
        return self.memory_kib >= OWASP_MIN_MEMORY_KIB and self.time_cost >= OWASP_MIN_TIME_COST


class PasswordHashing:
    """Hash and verify passwords with argon2id off the event loop."""

    def __init__(self, params: HashParameters | None = None) -> None:
        self.params = params or HashParameters()
        self._hasher = PasswordHasher(
            time_cost=self.params.time_cost,
            memory_cost=self.params.memory_kib,
            parallelism=self.params.parallelism,
            hash_len=32,
            salt_len=16,
            type=Type.ID,
        )
        self._dummy_hash: str | None = None

    async def _run(self, fn: object, *args: str) -> object:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(_hash_executor(), fn, *args)  # type: ignore[arg-type]

    async def hash(self, password: str) -> str:
        """The argon2id hash (PHC string, parameters and salt included) of `password`."""
        return str(await self._run(self._hasher.hash, password))

    def _verify_sync(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    async def verify(self, password_hash: str, password: str) -> bool:
        """True when `password` matches; a malformed or foreign hash never matches."""
        return bool(await self._run(self._verify_sync, password_hash, password))

    async def verify_dummy(self, password: str) -> None:
        """Spend the time of a real verification, for logins with an unknown e-mail.

        An attacker timing the answers must not learn which e-mails have accounts.
        """
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash(secrets.token_urlsafe(16))
        await self.verify(self._dummy_hash, password)

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the hash was made with other parameters (or is not argon2id)."""
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True


# The most common passwords that pass the character rules once capitalised
# (lower-cased here; compared case-insensitively).
COMMON_PASSWORDS = frozenset(
    """
    password1 password12 password123 password1234 password12345 password2023 password2024
    password2025 passw0rd p@ssw0rd p@ssword1 pa55word pa55w0rd passw0rd1 p@ssw0rd1
    qwerty1 qwerty12 qwerty123 qwerty1234 qwerty12345 qwertyuiop1 qwe123 qweasd123 qwerty2024
    1qaz2wsx 1q2w3e4r 1q2w3e4r5t 1q2w3e zaq12wsx zaq1zaq1 q1w2e3r4 q1w2e3r4t5 qazwsx1 qazwsx123
    abc123 abc1234 abc12345 abcd1234 abcdef1 abcdef12 abcdef123 a1b2c3d4 a1234567 aa123456
    aaa111 abcabc123 asdf1234 asdfgh1 asdfghjk1 zxcvbnm1 zxcv1234 iloveyou1 iloveyou2
    iloveyou123 iloveu1 welcome1 welcome12 welcome123 welcome2023 welcome2024 welcome2025
    letmein1 letmein2 letmein123 admin1 admin12 admin123 admin1234 administrator1 monkey1
    monkey12 monkey123 dragon1 dragon12 dragon123 master1 master12 master123 sunshine1
    sunshine123 princess1 princess12 princess123 football1 football12 football123 baseball1
    baseball12 baseball123 basketball1 soccer1 soccer12 soccer123 hockey1 shadow1 shadow12
    shadow123 superman1 superman123 batman1 batman123 trustno1 michael1 michael12 michael123
    jessica1 ashley1 daniel1 jordan1 jordan23 charlie1 charlie2 charlie123 thomas1 hunter1
    hunter2 hunter123 ranger1 buster1 tigger1 starwars1 pokemon1 computer1 internet1
    freedom1 whatever1 cheese1 chocolate1 summer1 summer12 summer123 summer2023 summer2024
    summer2025 winter1 winter2023 winter2024 spring2024 autumn2024 january1 february1
    monday1 friday1 secret1 secret12 secret123 changeme1 changeme123 default1 test1234
    test12345 tester1 testing1 testing123 user1234 login123 access1 access14 mustang1
    harley1 ginger1 pepper1 maggie1 killer1 money1 money123 money2024 love1234 lovely1
    loveme1 angel1 angel123 baby123 babygirl1 flower1 orange1 banana1 apple123 purple1
    silver1 golden1 diamond1 blessed1 jesus1 jesus123 christ1 god1234 matrix1 merlin1
    ncc1701 passport1 america1 canada1 london1 paris123 brokerx1 brokerx123 trading1
    stocks1 invest1 bitcoin1 crypto1 myspace1 linkedin1 facebook1 google1 yahoo123
    hello1 hello123 helloworld1 samsung1 iphone1 family1 friends1 forever1 student1
    teacher1 college1 school1
    """.split()
)

# Words that stay weak whatever digits or symbols surround them ("Welcome2024!").
COMMON_WORDS = frozenset(
    """
    password passwort passw pass qwerty qwertyuiop qwertz azerty welcome letmein admin
    administrator iloveyou monkey dragon master sunshine princess football baseball soccer
    shadow superman batman trustno michael charlie login secret changeme default test
    tester testing user hello summer winter spring autumn brokerx qazwsx asdf asdfgh
    zxcvbnm computer internet freedom whatever starwars pokemon hunter root guest abc abcd
    abcdef abcdefg
    """.split()
)

_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "@": "a", "$": "s"})
_EDGE_NOISE = re.compile(r"^[\d\W_]+|[\d\W_]+$")


def is_common_password(password: str) -> bool:
    """True for a well-known password, or a common word padded with digits/symbols."""
    lowered = password.lower()
    if lowered in COMMON_PASSWORDS:
        return True
    core = _EDGE_NOISE.sub("", lowered)
    return core in COMMON_WORDS or core.translate(_LEET) in COMMON_WORDS


def password_weakness(password: str) -> str | None:
    """Why `password` is refused at sign-up, or None when it is acceptable."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"Password must be at least {MIN_PASSWORD_LENGTH} characters long"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"Password must be at most {MAX_PASSWORD_LENGTH} characters long"
    if not any(c.isupper() for c in password):
        return "Password must contain an upper-case letter"
    if not any(c.islower() for c in password):
        return "Password must contain a lower-case letter"
    if not any(c.isdigit() for c in password):
        return "Password must contain a digit"
    if is_common_password(password):
        return "Password is too common; choose one that is harder to guess"
    return None
