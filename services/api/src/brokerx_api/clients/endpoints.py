"""HTTP endpoints of the clients domain: sign-up, e-mail verification and `/me`."""

from __future__ import annotations

from fastapi import APIRouter

from brokerx_api.auth.context import AuthContextDep
from brokerx_api.auth.deps import CurrentClient
from brokerx_api.clients import service
from brokerx_api.clients.schemas import (
    ClientStatusOut,
    MeOut,
    MeUpdate,
    ResendIn,
    ResendOut,
    SignupIn,
    VerifyIn,
)
from brokerx_core.db.models import Client

router = APIRouter(tags=["clients"])


def _me(client: Client) -> MeOut:
    return MeOut(
        id=client.id,
        email=client.email,
        first_name=client.first_name,
        last_name=client.last_name,
        status=client.status,
        mfa=client.mfa_method,
        email_confirmations=client.email_confirmations,
        created_at=client.created_at,
    )


@router.post("/clients", status_code=201, response_model=ClientStatusOut)
async def sign_up(body: SignupIn, ctx: AuthContextDep) -> ClientStatusOut:
    """Open an account: the client starts `pending` and receives a 6-digit code by e-mail.

    The e-mail is normalised (trimmed, lower-case) and unique (409 `email_taken`). The
    password needs 8+ characters with upper- and lower-case letters and a digit, and
    must not be a common one (422 `weak_password`). Clients must be 18 or older (422
    `underage`). A USD cash account at 0 is opened with the client.
    """
    client = await service.sign_up(ctx, body)
    return ClientStatusOut(id=client.id, email=client.email, status="pending")


@router.post("/clients/verify", response_model=ClientStatusOut)
async def verify(body: VerifyIn, ctx: AuthContextDep) -> ClientStatusOut:
    """Verify the e-mail address with the code it received (valid 24 h, single use).

    Wrong or expired code: 400 `invalid_code`; already verified: 409 `already_active`.
    """
    client = await service.verify_email(ctx, body.email, body.code)
    return ClientStatusOut(id=client.id, email=client.email, status="active")


@router.post("/clients/verify/resend", status_code=202, response_model=ResendOut)
async def resend(body: ResendIn, ctx: AuthContextDep) -> ResendOut:
    """E-mail a fresh verification code (the previous one stops working).

    The answer is the same whether or not the address has an account awaiting
    verification. Throttled per address and per IP (429 `rate_limited`).
    """
    await service.resend_verification(ctx, body.email)
    return ResendOut()


@router.get("/me", response_model=MeOut)
async def me(client: CurrentClient, ctx: AuthContextDep) -> MeOut:
    """The authenticated client's profile; `mfa` is `none`, `totp` or `email`."""
    return _me(await service.profile(ctx, client.client_id))


@router.patch("/me", response_model=MeOut)
async def update_me(body: MeUpdate, client: CurrentClient, ctx: AuthContextDep) -> MeOut:
    """Change preferences: `email_confirmations` turns execution e-mails on or off."""
    updated = await service.update_preferences(
        ctx, client.client_id, email_confirmations=body.email_confirmations
    )
    return _me(updated)
