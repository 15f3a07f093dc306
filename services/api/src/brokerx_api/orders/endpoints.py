"""HTTP endpoints of the orders domain (API.md, "Orders")."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from brokerx_api.auth.deps import CurrentClient, current_client
from brokerx_api.bare_route import BareRequestRoute, bare_request
from brokerx_api.deps import CorrelationIdDep, RedisDep, SessionDep, SettingsDep
from brokerx_api.orders import repository, service
from brokerx_api.orders.errors import OrderNotFound
from brokerx_api.orders.intake import intake_lifespan
from brokerx_api.orders.metrics import ORDER_ACK_SECONDS
from brokerx_api.orders.schemas import (
    AmendRequest,
    CancelAllOut,
    FillOut,
    OrderDetailOut,
    OrderOut,
    OrderPage,
    OrderRequest,
    TradeOut,
    TradePage,
    order_json,
    price_text,
    request_body_schema,
)
from brokerx_api.pagination import PageParamsDep, encode_cursor

router = APIRouter(tags=["orders"], lifespan=intake_lifespan, route_class=BareRequestRoute)

_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
SymbolQuery = Annotated[str | None, Query(max_length=12, description="Only this symbol.")]


def _optional_header(name: str, description: str) -> dict[str, Any]:
    """An OpenAPI header parameter (the endpoints read their headers from the request)."""
    return {
        "name": name,
        "in": "header",
        "required": False,
        "description": description,
        "schema": {"type": "string"},
    }


IDEMPOTENCY_KEY_PARAMETER = _optional_header(
    "Idempotency-Key", "Same meaning as `client_order_id`."
)
IF_MATCH_PARAMETER = _optional_header("If-Match", "The order `version`, bare or quoted.")


def _json(body: bytes, status_code: int, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status_code, headers=headers, media_type="application/json")


# The write endpoints of the order flow take the bare Request: the session check and the
# headers are read directly instead of through FastAPI's dependency solving, and the
# answer is rendered once with orjson (`order_json`). What they accept and answer is the
# same; the OpenAPI document declares the headers through `openapi_extra`.
@router.post(
    "/orders",
    status_code=201,
    response_model=OrderOut,
    openapi_extra={
        **request_body_schema(OrderRequest),
        "parameters": [IDEMPOTENCY_KEY_PARAMETER],
    },
    responses={
        200: {
            "description": "Replay: the order first created with this client_order_id",
            "model": OrderOut,
        },
        409: {"description": "`client_order_id_reused`", **_PROBLEM},
        422: {
            "description": "`validation_error`, `unknown_symbol`, `invalid_quantity`,"
            " `invalid_price`, `invalid_tick`, `price_out_of_band`, `insufficient_funds`,"
            " `insufficient_position`, `too_many_open_orders`, `market_closed`",
            **_PROBLEM,
        },
    },
)
@bare_request
async def create_order(request: Request) -> Response:
    """Place an order. Runs the pre-trade checks, reserves cash (buy) or shares (sell) and
    answers 201 with the order `pending_new`; the matching engine takes it from there and
    reports on the live stream. The same `client_order_id` (or `Idempotency-Key`) with the
    same body answers 200 with the existing order and `Idempotent-Replayed: true`."""
    started = time.perf_counter()
    client = await current_client(request)
    placement = await service.submit_order(
        request.app.state.intake,
        account_id=client.account_id,
        raw_body=await request.body(),
        idempotency_key=request.headers.get("idempotency-key"),
        correlation_id=str(request.state.correlation_id),
    )
    if placement.replayed:
        return _json(order_json(placement.order), 200, {"Idempotent-Replayed": "true"})
    ORDER_ACK_SECONDS.observe(time.perf_counter() - started)
    return _json(order_json(placement.order), 201)


@router.get("/orders", response_model=OrderPage)
async def list_orders(
    client: CurrentClient,
    session: SessionDep,
    page: PageParamsDep,
    status: Annotated[
        repository.StatusFilter, Query(description="open, closed (terminal) or all")
    ] = "all",
    symbol: SymbolQuery = None,
) -> OrderPage:
    """The client's orders, newest first, `limit` per page; pass `next_cursor` back as
    `cursor` for the next page."""
    after = page.after("orders", datetime, int)
    orders, next_key = await repository.list_orders(
        session,
        client.account_id,
        status=status,
        symbol=symbol.upper() if symbol else None,
        limit=page.limit,
        after=(after[0], after[1]) if after else None,
    )
    return OrderPage(
        items=[OrderOut.of(o) for o in orders],
        next_cursor=encode_cursor("orders", *next_key) if next_key else None,
    )


@router.get(
    "/orders/{order_id}",
    response_model=OrderDetailOut,
    responses={404: {"description": "`order_not_found`", **_PROBLEM}},
)
async def get_order(order_id: str, client: CurrentClient, session: SessionDep) -> OrderDetailOut:
    """One of the client's orders with its fills. Another client's order answers 404."""
    parsed = service.parse_order_id(order_id)
    order = await repository.get_order(session, client.account_id, parsed) if parsed else None
    if order is None:
        raise OrderNotFound("no such order")
    fills = await repository.get_fills(session, order.id)
    return OrderDetailOut(
        **OrderOut.of(order).model_dump(),
        fills=[
            FillOut(
                trade_id=f.trade_id, price=price_text(f.price) or "", quantity=f.quantity, ts=f.ts
            )
            for f in fills
        ],
    )


@router.patch(
    "/orders/{order_id}",
    status_code=202,
    response_model=OrderOut,
    openapi_extra={**request_body_schema(AmendRequest), "parameters": [IF_MATCH_PARAMETER]},
    responses={
        404: {"description": "`order_not_found`", **_PROBLEM},
        409: {"description": "`version_conflict`", **_PROBLEM},
        422: {"description": "`order_not_modifiable` and the pre-trade codes", **_PROBLEM},
        428: {"description": "`precondition_required`: If-Match is missing", **_PROBLEM},
    },
)
@bare_request
async def amend_order(request: Request, order_id: str) -> Response:
    """Replace a resting limit order's quantity (new total), price or time in force.
    `If-Match` must carry the order's current `version`. Answers 202: the engine applies
    it and a `replaced` or `replace_rejected` report follows. A replace that needs more
    cash or shares reserves the difference now."""
    client = await current_client(request)
    order = await service.amend_order(
        request.app.state.intake,
        account_id=client.account_id,
        order_id=order_id,
        if_match=request.headers.get("if-match"),
        raw_body=await request.body(),
        correlation_id=str(request.state.correlation_id),
    )
    return _json(order_json(order), 202)


@router.delete(
    "/orders/{order_id}",
    status_code=202,
    response_model=OrderOut,
    openapi_extra={"parameters": [IF_MATCH_PARAMETER]},
    responses={
        404: {"description": "`order_not_found`", **_PROBLEM},
        409: {"description": "`version_conflict`", **_PROBLEM},
        422: {"description": "`order_not_cancelable`: already terminal", **_PROBLEM},
    },
)
@bare_request
async def cancel_order(request: Request, order_id: str) -> Response:
    """Ask the engine to cancel an open order (`If-Match` optional). Answers 202; a
    `canceled` or `cancel_rejected` report follows."""
    client = await current_client(request)
    order = await service.cancel_order(
        request.app.state.intake,
        account_id=client.account_id,
        order_id=order_id,
        if_match=request.headers.get("if-match"),
        correlation_id=str(request.state.correlation_id),
    )
    return _json(order_json(order), 202)


@router.delete("/orders", status_code=202, response_model=CancelAllOut)
async def cancel_all_orders(
    client: CurrentClient,
    session: SessionDep,
    redis: RedisDep,
    settings: SettingsDep,
    correlation_id: CorrelationIdDep,
    symbol: SymbolQuery = None,
) -> CancelAllOut:
    """Ask the engine to cancel every open order of the client (optionally of one symbol)."""
    requested = await service.cancel_all_orders(
        session,
        redis,
        settings,
        account_id=client.account_id,
        symbol=symbol.upper() if symbol else None,
        correlation_id=correlation_id,
    )
    return CancelAllOut(requested=requested)


@router.get("/trades", response_model=TradePage)
async def list_trades(
    client: CurrentClient,
    session: SessionDep,
    page: PageParamsDep,
    symbol: SymbolQuery = None,
) -> TradePage:
    """The client's fills (`side` is the client's side of the trade), newest first."""
    after = page.after("trades", int)
    trades, next_seq = await repository.list_trades(
        session,
        client.account_id,
        symbol=symbol.upper() if symbol else None,
        limit=page.limit,
        before_seq=after[0] if after else None,
    )
    items = [
        TradeOut(
            trade_id=t.trade_id,
            order_id=t.order_id,
            symbol=t.symbol,
            side=t.side,
            price=price_text(t.price) or "",
            quantity=t.quantity,
            ts=t.ts,
        )
        for t in trades
    ]
    return TradePage(
        items=items,
        next_cursor=encode_cursor("trades", next_seq) if next_seq is not None else None,
    )
