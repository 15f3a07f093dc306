"""HTTP endpoints of the accounts domain (API.md, "Account, deposits, positions")."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from brokerx_api.accounts import service
from brokerx_api.accounts.idempotency import REPLAYED_HEADER, IdempotencyKeyHeader
from brokerx_api.accounts.schemas import (
    DEPOSIT_REQUEST_SCHEMA,
    AccountOut,
    DepositOut,
    LedgerEntryOut,
    PositionsOut,
    parse_deposit_request,
)
from brokerx_api.auth.deps import CurrentClient
from brokerx_api.deps import SessionDep
from brokerx_api.pagination import Page, PageParamsDep

router = APIRouter(tags=["accounts"])

_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
_UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing, invalid or expired access token", **_PROBLEM}
}
_LIST_ERRORS: dict[int | str, dict[str, Any]] = {
    **_UNAUTHORIZED,
    422: {"description": "`validation_error` (limit out of 1..500), `invalid_cursor`", **_PROBLEM},
}


@router.get("/account", response_model=AccountOut, responses=_UNAUTHORIZED)
async def get_account(client: CurrentClient, session: SessionDep) -> AccountOut:
    """The caller's cash account.

    `buying_power` is `cash − reserved_cash` (cash held by open buy orders is not
    available); `positions_value` values every position at its instrument's last trade
    price (the reference price before the first trade); `equity` is
    `cash + positions_value`.
    """
    return await service.account_overview(session, client)


@router.post(
    "/deposits",
    status_code=201,
    response_model=DepositOut,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": DEPOSIT_REQUEST_SCHEMA}},
        }
    },
    responses={
        200: {
            "description": "Replay of an earlier request with the same `Idempotency-Key` and"
            " body: its first response, with header `Idempotent-Replayed: true`",
            "model": DepositOut,
        },
        **_UNAUTHORIZED,
        409: {
            "description": "`idempotency_in_progress`: the same key is still being"
            " processed (retry after `Retry-After` seconds)",
            **_PROBLEM,
        },
        422: {
            "description": "`invalid_amount` (not a number, ≤ 0, more than 2 decimals,"
            " > 1000000.00), `unsupported_currency` (not USD), `idempotency_key_reused`"
            " (same key, other body), `validation_error` (malformed body, key > 255 chars)",
            **_PROBLEM,
        },
    },
)
async def create_deposit(
    request: Request,
    client: CurrentClient,
    session: SessionDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    """Deposit cash into the caller's account; it settles at once.

    The amount is a JSON string or number (read exactly, never as a float), > 0, with at
    most 2 decimals and at most 1,000,000.00; the currency is USD. The account is
    credited and a `deposit` ledger entry records the new balance (`balance_after`).

    With an `Idempotency-Key` header (scoped to the caller) a retried request applies
    once: the same key and body answer 200 with the first response and
    `Idempotent-Replayed: true`; the same key with another body answers 422
    `idempotency_key_reused`; while the first request is still in flight, 409
    `idempotency_in_progress`. Amounts `100`, `"100.0"` and `"100.00"` are one body.
    """
    deposit = parse_deposit_request(await request.body())
    result = await service.deposit(session, client, deposit, idempotency_key)
    if result.replayed:
        return JSONResponse(result.body, status_code=200, headers={REPLAYED_HEADER: "true"})
    return JSONResponse(result.body, status_code=201)


@router.get("/deposits", response_model=Page[DepositOut], responses=_LIST_ERRORS)
async def list_deposits(
    client: CurrentClient, session: SessionDep, page: PageParamsDep
) -> Page[DepositOut]:
    """The caller's deposits, newest first (`?limit=` 1..500, default 50; `?cursor=`
    is the `next_cursor` of the previous page, null on the last page)."""
    return await service.deposits_page(session, client, page)


@router.get("/ledger", response_model=Page[LedgerEntryOut], responses=_LIST_ERRORS)
async def list_ledger(
    client: CurrentClient, session: SessionDep, page: PageParamsDep
) -> Page[LedgerEntryOut]:
    """The caller's cash ledger, newest first: one entry per cash movement (`deposit`,
    `buy`, `sell`) with its signed `amount` and the `balance_after` it left. Cash always
    equals the sum of the entries. Paginated like `GET /deposits`."""
    return await service.ledger_page(session, client, page)


@router.get("/positions", response_model=PositionsOut, responses=_UNAUTHORIZED)
async def list_positions(client: CurrentClient, session: SessionDep) -> PositionsOut:
    """The caller's share positions (empty ones omitted), by symbol.

    `available_quantity` excludes shares held by open sell orders; `market_value` and
    `unrealized_pl` use the instrument's last trade price (the reference price before
    the first trade) and the position's average cost.
    """
    return PositionsOut(items=await service.positions(session, client))
