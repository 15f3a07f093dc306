"""Onboarding: sign-up, e-mail verification, resending the code, and the client's profile."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

from sqlalchemy.exc import IntegrityError

from brokerx_api.auth.context import AuthContext
from brokerx_api.auth.errors import AlreadyActive, EmailTaken, InvalidCode, Underage, WeakPassword
from brokerx_api.auth.throttle import identity_of
from brokerx_api.clients import repository
from brokerx_api.clients.emails import enqueue_email, verification_email
from brokerx_api.clients.schemas import SignupIn
from brokerx_api.errors import Unauthorized, ValidationFailed
from brokerx_core.auth.otp import codes_issued_within, consume_code, issue_code
from brokerx_core.auth.passwords import password_weakness
from brokerx_core.db.models import Client

MINIMUM_AGE = 18


def age_on(birth: date, today: date) -> int:
    """Whole years between `birth` and `today` (a 29 February birthday counts on 1 March)."""
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


def _check_birth_date(birth: date, today: date) -> None:
    if birth > today:
        message = "must not be in the future"
        raise ValidationFailed(
            f"date_of_birth: {message}",
            extra={"errors": [{"loc": ["date_of_birth"], "msg": message}]},
        )
    if age_on(birth, today) < MINIMUM_AGE:
        raise Underage(f"Clients must be at least {MINIMUM_AGE} years old")


async def _send_verification_code(ctx: AuthContext, client: Client) -> None:
    """Store a fresh code, commit, then hand the e-mail to the worker."""
    code_id, code = await issue_code(
        ctx.db,
        secret=ctx.code_secret,
        client_id=client.id,
        purpose="email_verification",
        now=ctx.now(),
        ttl=timedelta(seconds=ctx.settings.verification_code_ttl_seconds),
    )
    await ctx.db.commit()
    hours = ctx.settings.verification_code_ttl_seconds // 3600
    mail = verification_email(code_id, client.id, client.email, client.first_name, code, hours)
    await enqueue_email(ctx.arq, mail)


async def sign_up(ctx: AuthContext, data: SignupIn) -> Client:
    """Create a pending client with its cash account at 0 and e-mail a verification code.

    Client, account, code and audit event are one transaction; the e-mail is enqueued
    only once it has committed.
    """
    await ctx.throttle("signup-ip", ctx.caller.ip, ctx.settings.rate_limit_signup_per_minute)
    weakness = password_weakness(data.password)
    if weakness is not None:
        raise WeakPassword(weakness)
    _check_birth_date(data.date_of_birth, ctx.now().date())
    if await repository.email_exists(ctx.db, data.email):
        raise EmailTaken()
    password_hash = await ctx.hashing.hash(data.password)
    try:
        client = await repository.create_pending_client(
            ctx.db,
            email=data.email,
            password_hash=password_hash,
            first_name=data.first_name,
            last_name=data.last_name,
            date_of_birth=data.date_of_birth,
            address=data.address,
            phone=data.phone,
        )
    except IntegrityError as exc:
        # Lost a race with a concurrent sign-up of the same address.
        await ctx.db.rollback()
        if "uq_client_email" in str(exc.orig):
            raise EmailTaken() from exc
        raise
    await ctx.audit("client.signed_up", client.id, email=client.email)
    await _send_verification_code(ctx, client)
    return client


async def verify_email(ctx: AuthContext, email: str, code: str) -> Client:
    """Activate a pending client with the e-mailed code (400 `invalid_code` otherwise)."""
    settings = ctx.settings
    await ctx.throttle("verify-ip", ctx.caller.ip, settings.rate_limit_verify_ip_per_minute)
    await ctx.throttle("verify-account", identity_of(email), settings.rate_limit_verify_per_minute)
    client = await repository.get_by_email(ctx.db, email)
    if client is None:
        raise InvalidCode()
    if client.status == "active":
        raise AlreadyActive()
    now = ctx.now()
    # Each guess counts against the code, which is spent after the last one allowed: the
    # throttle alone would leave a day of guesses at a 6-digit code.
    verified = client.status == "pending" and await consume_code(
        ctx.db,
        secret=ctx.code_secret,
        client_id=client.id,
        purpose="email_verification",
        code=code,
        now=now,
        max_attempts=settings.verification_code_max_attempts,
    )
    client_id = client.id
    if verified and not await repository.activate(ctx.db, client_id, now):
        # Undo a code spent on a client that stopped being pending meanwhile.
        await ctx.db.rollback()
        verified = False
    if not verified:
        # Committed with the guess counted against the code.
        await ctx.audit("client.verification_failed", client_id)
        await ctx.db.commit()
        raise InvalidCode()
    await ctx.audit("client.verified", client.id)
    client.status = "active"
    return client


async def resend_verification(ctx: AuthContext, email: str) -> None:
    """Send a fresh code to a pending client; silently nothing for any other address.

    The throttle counts every address alike, so it reveals nothing either.
    """
    settings = ctx.settings
    await ctx.throttle("resend-ip", ctx.caller.ip, settings.rate_limit_signup_per_minute)
    await ctx.throttle("resend-account", identity_of(email), settings.rate_limit_resend_per_minute)
    client = await repository.get_by_email(ctx.db, email)
    if client is None or client.status != "pending":
        return
    sent = await codes_issued_within(
        ctx.db,
        client_id=client.id,
        purpose="email_verification",
        now=ctx.now(),
        ttl=timedelta(seconds=settings.verification_code_ttl_seconds),
        window=timedelta(days=1),
    )
    if sent >= settings.verification_codes_per_day:
        # Each code allows a few guesses: a cap on codes bounds the guesses a day. The
        # answer stays 202, as for an unknown address.
        await ctx.audit("client.verification_resend_capped", client.id, sent_today=sent)
        await ctx.db.commit()
        return
    await ctx.audit("client.verification_resent", client.id)
    await _send_verification_code(ctx, client)


async def profile(ctx: AuthContext, client_id: uuid.UUID) -> Client:
    """The authenticated client's own record."""
    client = await repository.get_by_id(ctx.db, client_id)
    if client is None:
        raise Unauthorized()
    return client


async def update_preferences(
    ctx: AuthContext, client_id: uuid.UUID, *, email_confirmations: bool | None
) -> Client:
    """Change the client's notification preferences; returns the updated record."""
    if email_confirmations is not None:
        await repository.update_client(ctx.db, client_id, email_confirmations=email_confirmations)
        await ctx.audit(
            "client.preferences_changed", client_id, email_confirmations=email_confirmations
        )
    return await profile(ctx, client_id)
