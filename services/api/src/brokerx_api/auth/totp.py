"""TOTP (RFC 6238, pyotp): secrets, provisioning URIs and replay-proof verification."""

from __future__ import annotations

import hmac

import pyotp

from brokerx_core.auth.otp import well_formed_code

ISSUER = "BrokerX"
INTERVAL_SECONDS = 30
VALID_WINDOW = 1  # accept the previous and the next 30-second step (clock drift)


def new_secret() -> str:
    """A random base32 secret (160 bits) for an authenticator app."""
    return pyotp.random_base32()


def provisioning_uri(secret: str, account_name: str) -> str:
    """The `otpauth://` URI an authenticator app scans (as a QR code)."""
    return pyotp.TOTP(secret, interval=INTERVAL_SECONDS).provisioning_uri(
        name=account_name, issuer_name=ISSUER
    )


def accepted_step(secret: str, code: str, now: float, last_step: int | None) -> int | None:
    """The time step `code` belongs to, if it is valid now and newer than `last_step`.

    Refusing a step at or before the last accepted one makes every code single use: a
    code seen over someone's shoulder is worthless once it has been used.
    """
    # Six ASCII digits, as every one-time code (isdigit() alone also takes Arabic-Indic
    # digits, which compare_digest cannot compare with the generated code).
    if not well_formed_code(code):
        return None
    code = code.strip()
    totp = pyotp.TOTP(secret, interval=INTERVAL_SECONDS)
    current = int(now // INTERVAL_SECONDS)
    for step in range(current - VALID_WINDOW, current + VALID_WINDOW + 1):
        if last_step is not None and step <= last_step:
            continue
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None
