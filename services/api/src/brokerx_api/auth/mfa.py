"""Turning on a second factor: TOTP (with a confirmation code) or e-mailed codes.

TOTP secrets are stored encrypted (`AuthContext.totp_box`, docs/decisions.md); the
plain secret exists only in memory and, once, in the setup answer.

Changing the second factor takes only an access token (API.md fixes these bodies: no
password). So a change signs out every other session of the client (the caller's stays)
and is e-mailed to the client, who learns of a change they did not make.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from brokerx_api.auth import repository as sessions_repository
from brokerx_api.auth import totp
from brokerx_api.auth.context import AuthContext
from brokerx_api.auth.errors import InvalidCode, MfaUnavailable
from brokerx_api.auth.sessions import mark_revoked
from brokerx_api.clients import repository as clients
from brokerx_api.clients.emails import enqueue_email, mfa_changed_email
from brokerx_api.errors import Unauthorized
from brokerx_core.auth.secretbox import UndecryptableSecret
from brokerx_core.db.models import Client
from brokerx_core.observability.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class TotpSetup:
    secret: str
    otpauth_uri: str


async def start_totp_setup(ctx: AuthContext, client_id: uuid.UUID) -> TotpSetup:
    """Draw a new secret and keep it pending until a code from it is confirmed.

    The current second factor (if any) stays in force until then, so a setup that is
    never completed locks nobody out.
    """
    client = await clients.get_by_id(ctx.db, client_id)
    if client is None:
        raise Unauthorized()
    secret = totp.new_secret()
    await clients.update_client(ctx.db, client_id, totp_pending_secret=ctx.totp_box.encrypt(secret))
    await ctx.audit("auth.totp_setup_started", client_id)
    return TotpSetup(secret, totp.provisioning_uri(secret, client.email))


async def enable_totp(
    ctx: AuthContext, client_id: uuid.UUID, session_id: uuid.UUID, code: str
) -> None:
    """Confirm the pending secret with a current code and make TOTP the second factor.

    Every session of the client but `session_id` (the caller's) ends, and the client is
    told by e-mail.
    """
    client = await clients.get_by_id(ctx.db, client_id)
    if client is None:
        raise Unauthorized()
    if client.totp_pending_secret is None:
        raise InvalidCode("Start the TOTP setup first")
    secret = await open_totp_secret(ctx, client_id, client.totp_pending_secret, "totp_enable")
    step = totp.accepted_step(secret, code, ctx.clock(), None)
    if step is None:
        await ctx.audit("auth.mfa_enable_failed", client_id, method="totp")
        await ctx.db.commit()
        raise InvalidCode()
    await clients.update_client(
        ctx.db,
        client_id,
        mfa_method="totp",
        # Encrypted afresh: under the current first key even if the keys changed since.
        totp_secret=ctx.totp_box.encrypt(secret),
        totp_pending_secret=None,
        # The confirming code is spent: it cannot also open a login.
        totp_last_step=step,
        failed_mfa_count=0,
    )
    await _second_factor_changed(ctx, client, session_id, "totp")


async def open_totp_secret(ctx: AuthContext, client_id: uuid.UUID, stored: str, step: str) -> str:
    """The plain TOTP secret of a stored value (a token, or a legacy plain value).

    A value no configured key decrypts is a server fault (a key missing from
    TOTP_ENCRYPTION_KEYS, or a tampered row), not a wrong code: 503, logged and audited,
    no failure counted, and an MFA token still usable once the keys are fixed.
    """
    try:
        return ctx.totp_box.decrypt(stored)
    except UndecryptableSecret:
        log.error("totp_secret_undecryptable", client_id=str(client_id), step=step)
        await ctx.audit(
            "auth.mfa_unavailable", client_id, reason="totp_secret_undecryptable", step=step
        )
        await ctx.db.commit()
        raise MfaUnavailable() from None


async def enable_email_mfa(ctx: AuthContext, client_id: uuid.UUID, session_id: uuid.UUID) -> None:
    """Make e-mailed one-time codes the second factor (replacing TOTP if it was on).

    When that changes the second factor, every session of the client but `session_id`
    (the caller's) ends, and the client is told by e-mail.
    """
    client = await clients.get_by_id(ctx.db, client_id)
    if client is None:
        raise Unauthorized()
    changed = client.mfa_method != "email"
    await clients.update_client(
        ctx.db,
        client_id,
        mfa_method="email",
        totp_secret=None,
        totp_pending_secret=None,
        failed_mfa_count=0,
    )
    if changed:
        await _second_factor_changed(ctx, client, session_id, "email")
    else:
        await ctx.audit("auth.mfa_enabled", client_id, method="email")


async def _second_factor_changed(
    ctx: AuthContext, client: Client, session_id: uuid.UUID, method: str
) -> None:
    """Sign out the client's other sessions, commit, then tell every api process and
    e-mail the client (mails only leave once the change has committed)."""
    now = ctx.now()
    revoked = await sessions_repository.revoke_other_sessions(
        ctx.db, client.id, session_id, now, "mfa_changed"
    )
    await ctx.audit("auth.mfa_enabled", client.id, method=method, sessions_revoked=len(revoked))
    await ctx.db.commit()
    for other in revoked:
        await mark_revoked(ctx, other)
    mail = mfa_changed_email(uuid.uuid4(), client.id, client.email, client.first_name, method, now)
    await enqueue_email(ctx.arq, mail)
