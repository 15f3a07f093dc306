"""HTTP endpoints of the auth domain: login, MFA, token refresh and logout."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Response

from brokerx_api.auth import mfa, service, sessions
from brokerx_api.auth.context import AuthContextDep
from brokerx_api.auth.deps import CurrentClient, session_cache
from brokerx_api.auth.schemas import (
    LoginIn,
    MfaChallengeOut,
    MfaMethodOut,
    MfaVerifyIn,
    RefreshIn,
    TokensOut,
    TotpEnableIn,
    TotpSetupOut,
)
from brokerx_api.auth.session_cache import RevocationListener
from brokerx_api.auth.sessions import IssuedTokens


@asynccontextmanager
async def revocations_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Keep this process's session memo in step with revocations made anywhere."""
    listener = RevocationListener(app.state.redis, session_cache(app))
    listener.start()
    app.state.session_revocations = listener
    try:
        yield
    finally:
        await listener.stop()


router = APIRouter(prefix="/auth", tags=["auth"], lifespan=revocations_lifespan)


def _tokens(issued: IssuedTokens) -> TokensOut:
    return TokensOut(
        access_token=issued.access_token,
        refresh_token=issued.refresh_token,
        expires_in=issued.expires_in,
    )


@router.post("/login", response_model=TokensOut | MfaChallengeOut)
async def login(body: LoginIn, ctx: AuthContextDep) -> TokensOut | MfaChallengeOut:
    """Log in with e-mail and password.

    Answers the tokens when the account has no second factor, otherwise
    `{mfa_required: true, mfa_token, methods}` (for `email`, a 6-digit code is e-mailed);
    finish with `POST /auth/mfa/verify`. An unknown e-mail and a wrong password both
    answer 401 `invalid_credentials`. Five wrong passwords in a row lock the account
    for 15 minutes (423 `account_locked` with `Retry-After`). Attempts are throttled per
    IP and per account (429 `rate_limited`).
    """
    outcome = await service.login(ctx, body.email, body.password)
    if isinstance(outcome, service.MfaChallenge):
        return MfaChallengeOut(mfa_token=outcome.mfa_token, methods=outcome.methods)
    return _tokens(outcome)


@router.post("/mfa/verify", response_model=TokensOut)
async def verify_mfa(body: MfaVerifyIn, ctx: AuthContextDep) -> TokensOut:
    """Finish a login with the second factor: a TOTP code or the e-mailed code.

    A wrong code answers 401 `invalid_code`; three in a row lock the account for 15
    minutes (423 `account_locked`). A TOTP code is accepted once only. A stored TOTP
    secret the server cannot decrypt (its keys are misconfigured) answers 503
    `service_unavailable` and counts nothing against the client.
    """
    return _tokens(await service.verify_mfa(ctx, body.mfa_token, body.code))


@router.post("/refresh", response_model=TokensOut)
async def refresh(body: RefreshIn, ctx: AuthContextDep) -> TokensOut:
    """Exchange a refresh token for a new access/refresh pair.

    The refresh token is spent; presenting a spent one again revokes the whole session
    (every token of it stops working). Unknown, spent or expired: 401 `invalid_token`.
    """
    return _tokens(await sessions.rotate_refresh_token(ctx, body.refresh_token))


@router.post("/logout", status_code=204, response_class=Response)
async def logout(client: CurrentClient, ctx: AuthContextDep) -> Response:
    """End the current session: its access and refresh tokens stop working at once."""
    await sessions.logout(ctx, client.client_id, client.session_id)
    return Response(status_code=204)


@router.post("/mfa/totp/setup", response_model=TotpSetupOut)
async def totp_setup(client: CurrentClient, ctx: AuthContextDep) -> TotpSetupOut:
    """Start TOTP enrolment: a new secret and its `otpauth://` URI for an authenticator app.

    Nothing changes for logins until `POST /auth/mfa/totp/enable` confirms a code.
    """
    setup = await mfa.start_totp_setup(ctx, client.client_id)
    return TotpSetupOut(secret=setup.secret, otpauth_uri=setup.otpauth_uri)


@router.post("/mfa/totp/enable", response_model=MfaMethodOut)
async def totp_enable(
    body: TotpEnableIn, client: CurrentClient, ctx: AuthContextDep
) -> MfaMethodOut:
    """Confirm the pending TOTP secret with a current code; logins then require TOTP.

    Every other session of the client is signed out (this one stays) and the client is
    told by e-mail. A wrong code (or no pending setup) answers 400 `invalid_code`.
    """
    await mfa.enable_totp(ctx, client.client_id, client.session_id, body.code)
    return MfaMethodOut(mfa="totp")


@router.post("/mfa/email/enable", response_model=MfaMethodOut)
async def email_mfa_enable(client: CurrentClient, ctx: AuthContextDep) -> MfaMethodOut:
    """Make e-mailed one-time codes the second factor (replaces TOTP if it was on).

    When this changes the second factor, every other session of the client is signed
    out (this one stays) and the client is told by e-mail.
    """
    await mfa.enable_email_mfa(ctx, client.client_id, client.session_id)
    return MfaMethodOut(mfa="email")
