"""Accounts use cases: balances and valuation, deposits (idempotent), ledger and positions.

Cash moves only through append-only ledger entries: a deposit credits the account and
writes its `deposit` row and ledger entry in one transaction; buys and sells are
written by the matching engine. Reservations for open orders (`reserved_cash`,
`reserved_quantity`) are holds, not movements, and never touch the ledger.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from brokerx_api.accounts import idempotency, repository
from brokerx_api.accounts.errors import AccountNotFound, InvalidAmount
from brokerx_api.accounts.schemas import (
    AccountOut,
    DepositOut,
    DepositRequest,
    LedgerEntryOut,
    PositionOut,
)
from brokerx_api.auth.deps import AuthenticatedClient
from brokerx_api.pagination import Page, PageParams, encode_cursor
from brokerx_core.money import CENT, cash

DEPOSIT_SCOPE = "deposit"
MAX_DEPOSIT = Decimal("1000000.00")
DEPOSITS_LIST = "deposits"
LEDGER_LIST = "ledger"


@dataclass(frozen=True, slots=True)
class DepositResult:
    """The response to a deposit request: the first one, or its replay."""

    body: dict[str, object]
    replayed: bool


def check_deposit_amount(amount: Decimal) -> Decimal:
    """The amount as cash (2 decimals) or `InvalidAmount`: > 0, ≤ 2 decimals, ≤ 1,000,000."""
    if amount <= 0:
        raise InvalidAmount("amount must be greater than 0")
    if amount > MAX_DEPOSIT:
        raise InvalidAmount(f"amount must be at most {MAX_DEPOSIT} per deposit")
    # Exact comparison: money.decimal_places normalises within the context precision
    # (28 digits), so 100.000…0001 with 30 digits would pass as 100.00.
    if amount.quantize(CENT) != amount:
        raise InvalidAmount("amount must have at most 2 decimals")
    return amount.quantize(CENT)


async def deposit(
    session: AsyncSession,
    client: AuthenticatedClient,
    request: DepositRequest,
    idempotency_key: str | None,
) -> DepositResult:
    """Credit a settled deposit, applying a request with an `Idempotency-Key` once."""
    amount = check_deposit_amount(request.amount)
    request_hash = idempotency.fingerprint(request.canonical())
    if idempotency_key is not None:
        stored = await idempotency.claim(
            session,
            client_id=client.client_id,
            scope=DEPOSIT_SCOPE,
            key=idempotency_key,
            request_hash=request_hash,
        )
        if stored is not None:
            # JSONB keeps keys in its own order; replay them in the schema's order.
            body = {name: stored.body[name] for name in DepositOut.model_fields}
            return DepositResult(body, replayed=True)
    balance = await repository.credit_cash(session, client.account_id, amount)
    row = await repository.insert_deposit(
        session,
        account_id=client.account_id,
        amount=amount,
        currency=request.currency,
        balance_after=balance,
        idempotency_key=idempotency_key,
    )
    body = DepositOut.model_validate(row, from_attributes=True).model_dump(mode="json")
    if idempotency_key is not None:
        await idempotency.remember(
            session,
            client_id=client.client_id,
            scope=DEPOSIT_SCOPE,
            key=idempotency_key,
            request_hash=request_hash,
            response=idempotency.StoredResponse(201, body),
        )
    return DepositResult(body, replayed=False)


async def account_overview(session: AsyncSession, client: AuthenticatedClient) -> AccountOut:
    """Balances and valuation of the client's account."""
    account = await repository.get_account(session, client.account_id)
    if account is None:
        raise AccountNotFound()
    held = await positions(session, client)
    # Σ of the rounded market values, so the total equals the sum of GET /positions.
    positions_value = sum((position.market_value for position in held), start=Decimal("0.00"))
    return AccountOut(
        id=account.id,
        currency=account.currency,
        cash=account.cash,
        reserved_cash=account.reserved_cash,
        buying_power=account.cash - account.reserved_cash,
        positions_value=positions_value,
        equity=account.cash + positions_value,
    )


def _position(row: repository.PositionRow) -> PositionOut:
    market_value = cash(row.last_price * row.quantity)
    return PositionOut(
        symbol=row.symbol,
        quantity=row.quantity,
        reserved_quantity=row.reserved_quantity,
        available_quantity=row.quantity - row.reserved_quantity,
        avg_cost=row.avg_cost,
        last_price=row.last_price,
        market_value=market_value,
        unrealized_pl=market_value - cash(row.avg_cost * row.quantity),
    )


async def positions(session: AsyncSession, client: AuthenticatedClient) -> list[PositionOut]:
    """The client's non-empty positions valued at the last price."""
    return [_position(row) for row in await repository.list_positions(session, client.account_id)]


async def deposits_page(
    session: AsyncSession, client: AuthenticatedClient, page: PageParams
) -> Page[DepositOut]:
    """One page of the client's deposits, newest first."""
    after = page.after(DEPOSITS_LIST, datetime, uuid.UUID)
    rows = await repository.list_deposits(
        session,
        client.account_id,
        limit=page.limit + 1,
        after=(after[0], after[1]) if after else None,
    )
    items, next_cursor = page.cut(
        rows, lambda row: encode_cursor(DEPOSITS_LIST, row.created_at, row.id)
    )
    return Page[DepositOut](
        items=[DepositOut.model_validate(row, from_attributes=True) for row in items],
        next_cursor=next_cursor,
    )


async def ledger_page(
    session: AsyncSession, client: AuthenticatedClient, page: PageParams
) -> Page[LedgerEntryOut]:
    """One page of the client's ledger entries, newest first."""
    after = page.after(LEDGER_LIST, int)
    rows = await repository.list_ledger(
        session, client.account_id, limit=page.limit + 1, after_seq=after[0] if after else None
    )
    items, next_cursor = page.cut(rows, lambda row: encode_cursor(LEDGER_LIST, row.seq))
    return Page[LedgerEntryOut](
        items=[LedgerEntryOut.model_validate(row, from_attributes=True) for row in items],
        next_cursor=next_cursor,
    )
