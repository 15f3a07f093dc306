"""Login: password, lockout, throttling, and the second factor (TOTP or e-mailed code).

Every decision leaves an audit event. A refused attempt commits its own transaction
(failure counter, lock, audit) before the error is raised, since the request's session
rolls back on errors.

Lockouts hold however many attempts arrive at once: each attempt is counted as a
failure (`clients.reserve_attempt`, committed) before its password or code is checked,
and none is checked once the account is locked, so at most `login_max_failures`
passwords and `mfa_max_failures` codes are decided per lock window. A right answer
gives its reservation back. While the account is locked every attempt answers 423,
whether or not it was right (docs/decisions.md, "Lockouts under concurrency").
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, NoReturn

from brokerx_api.auth import totp
from brokerx_api.auth.context import AuthContext
from brokerx_api.auth.errors import (
    AccountLocked,
    AccountNotActive,
    InvalidCredentials,
    InvalidMfaCode,
    TokenRejected,
)
from brokerx_api.auth.mfa import open_totp_secret
from brokerx_api.auth.schemas import MAX_EMAIL_LENGTH, possible_account_email
from brokerx_api.auth.sessions import IssuedTokens, open_session
from brokerx_api.auth.throttle import identity_of
from brokerx_api.clients import repository as clients
from brokerx_api.clients.emails import enqueue_email, login_code_email
from brokerx_core.auth.otp import consume_code, issue_code
from brokerx_core.auth.tokens import InvalidToken
from brokerx_core.db.models import Client

MFA_USED_KEY = "auth:mfa-token-used:{jti}"


@dataclass(frozen=True, slots=True)
class MfaChallenge:
    mfa_token: str
    methods: list[Literal["totp", "email"]]


def _seconds_left(locked_until: datetime | None, now: datetime) -> int | None:
    if locked_until is None or locked_until <= now:
        return None
    return max(1, math.ceil((locked_until - now).total_seconds()))


async def _refuse_locked(
    ctx: AuthContext, client_id: uuid.UUID, step: str, **details: object
) -> NoReturn:
    """423 for an attempt on a locked account, with the time left of the lock."""
    seconds = _seconds_left(await clients.locked_until(ctx.db, client_id), ctx.now())
    await ctx.audit("auth.attempt_while_locked", client_id, step=step, **details)
    await ctx.db.commit()
    raise AccountLocked(seconds or 1)


async def _reserve_attempt(
    ctx: AuthContext, client_id: uuid.UUID, now: datetime, *, counter: str, limit: int, step: str
) -> clients.Reservation:
    """Count this attempt as a failure before it is checked, and commit; 423 when locked.

    Committed at once so that concurrent attempts see it. A crash between this commit and
    the check leaves the attempt counted as a failure: acceptable, it only costs the
    client one try of the run (a right answer would have reset the count).
    """
    reservation = await clients.reserve_attempt(
        ctx.db,
        client_id,
        counter=counter,
        max_failures=limit,
        now=now,
        lock_until=now + timedelta(seconds=ctx.settings.lockout_seconds),
    )
    if reservation is None:
        await _refuse_locked(ctx, client_id, step)
    await ctx.db.commit()
    return reservation


async def _refuse_failure(
    ctx: AuthContext, client_id: uuid.UUID, reservation: clients.Reservation, step: str
) -> None:
    """After a wrong answer (its reservation stands): 423 when the account is locked now.

    Locked by this attempt (it was the limit-th in a row): the lock's one audit event.
    Locked by a concurrent attempt while this one was checked: 423 as well, the same
    answer a right password gets then. Otherwise return, and the caller answers 401.
    """
    if reservation.locked_until is not None:
        await ctx.audit(
            "auth.account_locked", client_id, step=step, locked_until=reservation.locked_until
        )
        await ctx.db.commit()
        raise AccountLocked(ctx.settings.lockout_seconds)
    seconds = _seconds_left(await clients.locked_until(ctx.db, client_id), ctx.now())
    await ctx.db.commit()
    if seconds is not None:
        raise AccountLocked(seconds)


async def _settle_success(
    ctx: AuthContext,
    client_id: uuid.UUID,
    reservation: clients.Reservation,
    *,
    counter: str,
    step: str,
) -> None:
    """After a right answer: end the run of failures, or 423 if a concurrent attempt
    locked the account meanwhile (a right guess must not be told apart then)."""
    settled = await clients.settle_success(
        ctx.db, client_id, counter=counter, now=ctx.now(), reservation=reservation
    )
    if not settled:
        await _refuse_locked(ctx, client_id, step, right_answer=True)


async def login(ctx: AuthContext, email: str, password: str) -> IssuedTokens | MfaChallenge:
    """Check the password; open a session, or challenge for the second factor."""
    settings = ctx.settings
    await ctx.throttle("login-ip", ctx.caller.ip, settings.rate_limit_login_ip_per_minute)
    await ctx.throttle(
        "login-account", identity_of(email), settings.rate_limit_login_account_per_minute
    )
    now = ctx.now()
    # An e-mail no account can have is not looked up: PostgreSQL would refuse a NUL in it.
    possible = possible_account_email(email)
    client = await clients.get_by_email(ctx.db, email) if possible else None
    if client is None:
        # End the read transaction: no connection is held while argon2 runs.
        await ctx.db.commit()
        await ctx.hashing.verify_dummy(password)
        # Escaped when impossible: the audit's JSONB takes neither NUL nor lone surrogates.
        shown = email if possible else ascii(email)[1:-1][:MAX_EMAIL_LENGTH]
        await ctx.audit("auth.login_failed", None, reason="unknown_email", email=shown)
        await ctx.db.commit()
        raise InvalidCredentials()
    # Committed before argon2 runs, so no connection is held meanwhile either.
    reservation = await _reserve_attempt(
        ctx,
        client.id,
        now,
        counter="failed_login_count",
        limit=settings.login_max_failures,
        step="password",
    )
    if not await ctx.hashing.verify(client.password_hash, password):
        await ctx.audit("auth.login_failed", client.id, reason="wrong_password")
        await _refuse_failure(ctx, client.id, reservation, "password")
        raise InvalidCredentials()

    new_hash = None
    if ctx.hashing.needs_rehash(client.password_hash):
        # Parameters were raised since this hash was made: upgrade it while we have the
        # plain password (hashed before the row is written: no lock held meanwhile).
        new_hash = await ctx.hashing.hash(password)
    # A right password ends the run of consecutive failures.
    await _settle_success(
        ctx, client.id, reservation, counter="failed_login_count", step="password"
    )
    if new_hash is not None:
        await clients.update_client(ctx.db, client.id, password_hash=new_hash)
    if client.status != "active":
        await ctx.audit("auth.login_refused", client.id, reason="status", status=client.status)
        await ctx.db.commit()
        raise AccountNotActive(
            "Verify your e-mail address first"
            if client.status == "pending"
            else "This account is suspended"
        )
    if client.mfa_method == "none":
        issued = await open_session(ctx, client.id, now)
        await ctx.audit("auth.login_succeeded", client.id, mfa="none")
        return issued
    return await _challenge(ctx, client, now)


async def _challenge(ctx: AuthContext, client: Client, now: datetime) -> MfaChallenge:
    method: Literal["totp", "email"] = "email" if client.mfa_method == "email" else "totp"
    await ctx.audit("auth.mfa_challenged", client.id, method=method)
    mfa_token = ctx.tokens.issue_mfa(client.id)
    if method == "email":
        minutes = ctx.settings.mfa_email_code_ttl_seconds // 60
        code_id, code = await issue_code(
            ctx.db,
            secret=ctx.code_secret,
            client_id=client.id,
            purpose="mfa_login",
            now=now,
            ttl=timedelta(seconds=ctx.settings.mfa_email_code_ttl_seconds),
        )
        await ctx.db.commit()
        mail = login_code_email(code_id, client.id, client.email, client.first_name, code, minutes)
        await enqueue_email(ctx.arq, mail)
    return MfaChallenge(mfa_token, [method])


async def verify_mfa(ctx: AuthContext, mfa_token: str, code: str) -> IssuedTokens:
    """Check the second factor of a login; open the session."""
    try:
        claims = ctx.tokens.decode(mfa_token, "mfa")
    except InvalidToken as exc:
        raise TokenRejected("Invalid or expired MFA token; log in again") from exc
    settings = ctx.settings
    await ctx.throttle("mfa-ip", ctx.caller.ip, settings.rate_limit_login_ip_per_minute)
    await ctx.throttle(
        "mfa-account", str(claims.subject), settings.rate_limit_login_account_per_minute
    )
    used_key = MFA_USED_KEY.format(jti=claims.token_id)
    if await _mfa_token_used(ctx, used_key):
        raise TokenRejected("This MFA token was already used; log in again")
    now = ctx.now()
    client = await clients.get_by_id(ctx.db, claims.subject)
    if client is None or client.status != "active" or client.mfa_method == "none":
        raise TokenRejected("Invalid MFA token; log in again")
    # Opened before anything is counted: a secret no key decrypts is a server fault
    # (503), never a failure of the client's.
    secret = None
    if client.mfa_method == "totp" and client.totp_secret is not None:
        secret = await open_totp_secret(ctx, client.id, client.totp_secret, "mfa")
    reservation = await _reserve_attempt(
        ctx,
        client.id,
        now,
        counter="failed_mfa_count",
        limit=settings.mfa_max_failures,
        step="mfa",
    )
    if not await _second_factor_ok(ctx, client, secret, code, now):
        await ctx.audit("auth.mfa_failed", client.id, method=client.mfa_method)
        await _refuse_failure(ctx, client.id, reservation, "mfa")
        raise InvalidMfaCode()
    await _settle_success(ctx, client.id, reservation, counter="failed_mfa_count", step="mfa")
    await _claim_mfa_token(ctx, used_key)
    issued = await open_session(ctx, client.id, now)
    await ctx.audit("auth.mfa_succeeded", client.id, method=client.mfa_method)
    await ctx.audit("auth.login_succeeded", client.id, mfa=client.mfa_method)
    return issued


async def _second_factor_ok(
    ctx: AuthContext, client: Client, secret: str | None, code: str, now: datetime
) -> bool:
    if client.mfa_method == "totp":
        if secret is None:
            return False
        step = totp.accepted_step(secret, code, ctx.clock(), client.totp_last_step)
        return step is not None and await clients.accept_totp_step(ctx.db, client.id, step)
    spent = await consume_code(
        ctx.db,
        secret=ctx.code_secret,
        client_id=client.id,
        purpose="mfa_login",
        code=code,
        now=now,
    )
    return bool(spent)


async def _mfa_token_used(ctx: AuthContext, key: str) -> bool:
    return bool(await ctx.redis.exists(key))


async def _claim_mfa_token(ctx: AuthContext, key: str) -> None:
    """An MFA token opens one session only."""
    claimed = await ctx.redis.set(key, "1", nx=True, ex=ctx.settings.mfa_token_ttl_seconds)
    if not claimed:
        raise TokenRejected("This MFA token was already used; log in again")
