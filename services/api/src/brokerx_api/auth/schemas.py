"""Request and response bodies of login, MFA and token endpoints."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, Field

from brokerx_api.clients.schemas import Code, normalise_email

# Long enough for any real token; bounds the work a garbage body can cause.
Token = Annotated[str, Field(min_length=1, max_length=4096)]


def _login_email(value: object) -> object:
    # A malformed address can never match an account: treat it as unknown (401), not
    # as a validation error that would tell the caller anything.
    if not isinstance(value, str):
        return value
    try:
        return normalise_email(value)
    except ValueError:
        return value.strip().lower()


class LoginIn(BaseModel):
    email: Annotated[str, BeforeValidator(_login_email), Field(min_length=1, max_length=320)]
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
