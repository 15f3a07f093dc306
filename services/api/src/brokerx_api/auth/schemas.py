"""Request and response bodies of login, MFA and token endpoints."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, Field

from brokerx_api.clients.schemas import Code, normalise_email

# Long enough for any real token; bounds the work a garbage body can cause.
Token = Annotated[str, Field(min_length=1, max_length=4096)]
MAX_EMAIL_LENGTH = 320


def possible_account_email(email: str) -> bool:
    """Whether an account could have `email`: stored addresses are normalised ASCII
    (`normalise_email` refuses SMTPUTF8), printable, at most 320 characters."""
    return 0 < len(email) <= MAX_EMAIL_LENGTH and email.isascii() and email.isprintable()


def _login_email(value: object) -> object:
    # A malformed address can never match an account: treat it as unknown (401), not
    # as a validation error that would tell the caller anything. Only a missing or
    # non-string e-mail is a 422.
    if not isinstance(value, str):
        return value
    value = value.strip()
    if not possible_account_email(value):
        return value
    try:
        return normalise_email(value)
    except ValueError:
        return value.lower()


class LoginIn(BaseModel):
    # Any string: one no account can have (`possible_account_email`) answers 401 as an
    # unknown e-mail does (no length limit here: it would answer 422).
    email: Annotated[str, BeforeValidator(_login_email)]
    password: str = Field(min_length=1, max_length=1024)


class TokensOut(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


class MfaChallengeOut(BaseModel):
    mfa_required: Literal[True] = True
    mfa_token: str
    methods: list[Literal["totp", "email"]]


class MfaVerifyIn(BaseModel):
    mfa_token: Token
    code: Code


class RefreshIn(BaseModel):
    refresh_token: Token


class TotpSetupOut(BaseModel):
    secret: str
    otpauth_uri: str


class TotpEnableIn(BaseModel):
    code: Code


class MfaMethodOut(BaseModel):
    mfa: Literal["totp", "email"]
